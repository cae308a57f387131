"""sampling strata: one bottom-k window per stratum when sampling.stratify_by is set

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 01:45:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('samples', schema=None) as batch_op:
        batch_op.add_column(sa.Column('stratum', sa.String(length=255), server_default='', nullable=False))
        batch_op.create_index('ix_samples_pair_run_stratum', ['pair', 'run_id', 'stratum'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('samples', schema=None) as batch_op:
        batch_op.drop_index('ix_samples_pair_run_stratum')
        batch_op.drop_column('stratum')
