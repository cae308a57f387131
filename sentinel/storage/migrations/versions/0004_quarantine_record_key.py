"""quarantine keyed by record content: unique on (topic, partition, offset, value_sha256)

Before, quarantine rows were unique on (topic, partition, offset), so after offsets restart (a
re-created topic, a restarted in-memory broker) new bad messages at reused offsets were dropped.
Existing rows keep their place: their value_sha256 is computed from the stored raw text, which is
the exact value for every message that was valid UTF-8 and short enough to be kept whole (so a
redelivery of one of those is still recognised).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 10:00:00
"""
import hashlib

from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

_quarantine = sa.table('quarantine', sa.column('id', sa.Integer), sa.column('raw', sa.Text),
                       sa.column('value_sha256', sa.String(64)))


def _fill_digests() -> None:
    conn = op.get_bind()
    last = 0
    while True:
        rows = conn.execute(sa.select(_quarantine.c.id, _quarantine.c.raw).where(_quarantine.c.id > last)
                            .order_by(_quarantine.c.id).limit(1000)).all()
        if not rows:
            return
        for row in rows:
            digest = hashlib.sha256((row.raw or '').encode('utf-8', 'surrogatepass')).hexdigest()
            conn.execute(sa.update(_quarantine).where(_quarantine.c.id == row.id).values(value_sha256=digest))
        last = rows[-1].id


def upgrade() -> None:
    with op.batch_alter_table('quarantine', schema=None) as batch_op:
        batch_op.add_column(sa.Column('value_sha256', sa.String(length=64), server_default='', nullable=False))
    _fill_digests()
    with op.batch_alter_table('quarantine', schema=None) as batch_op:
        batch_op.drop_constraint('uq_quarantine_position', type_='unique')
        batch_op.create_unique_constraint('uq_quarantine_record', ['topic', 'partition', 'offset', 'value_sha256'])


def downgrade() -> None:
    # keeps the first row of each position: the old key cannot hold the others
    q = sa.table('quarantine', sa.column('id', sa.Integer), sa.column('topic'), sa.column('partition'),
                 sa.column('offset'))
    first = sa.select(sa.func.min(q.c.id)).group_by(q.c.topic, q.c.partition, q.c.offset)
    op.get_bind().execute(sa.delete(q).where(q.c.id.not_in(first)))
    with op.batch_alter_table('quarantine', schema=None) as batch_op:
        batch_op.drop_constraint('uq_quarantine_record', type_='unique')
        batch_op.create_unique_constraint('uq_quarantine_position', ['topic', 'partition', 'offset'])
        batch_op.drop_column('value_sha256')
