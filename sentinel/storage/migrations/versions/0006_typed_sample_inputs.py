"""sample inputs as typed binary rows; the raw text of text traffic

``samples.inputs`` held a JSON list of floats (one flat float input); it now holds a row of typed
arrays in sentinel.tensors' binary form (``encode_row``: dtype and shape kept, a few bytes of
header per array), so int64 token ids, several named inputs and image tensors are stored exactly
and compactly. Existing rows become one float32 1-D array named ``input`` (what a single-input
model reads them as: ``sentinel.tensors.adopt``). ``samples.text`` is new: the raw text a sample's
inputs were made from, for pairs with a tokenizer.

Rows are converted in batches by id, so a large table is not read into memory at once. The
downgrade writes JSON float lists back (a row of several arrays becomes their values one after
the other, flattened: the old code knew only one flat input) and drops ``text``.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 17:30:00
"""
import json

import numpy as np
from alembic import op
import sqlalchemy as sa

from sentinel.tensors import decode_row, encode_row


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

BATCH = 1000


def _convert(source: sa.Column, target: sa.Column, convert) -> None:
    """Fill column ``target`` from ``source`` for every sample, ``BATCH`` rows at a time."""
    bind = op.get_bind()
    samples = sa.table('samples', sa.column('id', sa.Integer()), source, target)
    put = sa.update(samples).where(samples.c.id == sa.bindparam('_id')).values({target.name: sa.bindparam('_value')})
    last = None
    while True:
        q = sa.select(samples.c.id, source).order_by(samples.c.id).limit(BATCH)
        if last is not None:
            q = q.where(samples.c.id > last)
        rows = bind.execute(q).all()
        if not rows:
            return
        bind.execute(put, [{'_id': i, '_value': convert(i, value)} for i, value in rows])
        last = rows[-1][0]


def _to_row(sample_id: int, value: object) -> bytes:
    if isinstance(value, str):       # a JSON column read through a driver that hands back text
        value = json.loads(value)
    try:
        arr = np.asarray(value, dtype=np.float32).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"samples.id {sample_id}: inputs are not a list of numbers ({exc})") from None
    return encode_row({'input': arr})


def _to_list(_sample_id: int, value: bytes) -> list:
    row = decode_row(value)
    if not row:
        return []
    return np.concatenate([np.asarray(a, dtype=np.float64).reshape(-1) for a in row.values()]).tolist()


def upgrade() -> None:
    with op.batch_alter_table('samples', schema=None) as batch_op:
        batch_op.add_column(sa.Column('inputs_bin', sa.LargeBinary(), nullable=True))
        batch_op.add_column(sa.Column('text', sa.Text(), nullable=True))
    _convert(sa.column('inputs', sa.JSON()), sa.column('inputs_bin', sa.LargeBinary()), _to_row)
    with op.batch_alter_table('samples', schema=None) as batch_op:
        batch_op.drop_column('inputs')
        batch_op.alter_column('inputs_bin', new_column_name='inputs', existing_type=sa.LargeBinary(),
                              nullable=False)


def downgrade() -> None:
    with op.batch_alter_table('samples', schema=None) as batch_op:
        batch_op.add_column(sa.Column('inputs_json', sa.JSON(), nullable=True))
    _convert(sa.column('inputs', sa.LargeBinary()), sa.column('inputs_json', sa.JSON()), _to_list)
    with op.batch_alter_table('samples', schema=None) as batch_op:
        batch_op.drop_column('inputs')
        batch_op.drop_column('text')
        batch_op.alter_column('inputs_json', new_column_name='inputs', existing_type=sa.JSON(), nullable=False)
