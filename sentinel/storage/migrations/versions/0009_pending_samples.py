"""pending_samples: the number of pending samples (run_id NULL) per pair and stratum, kept by
every change to them, so ingest reads it instead of counting the window on every poll. Filled
from the samples stored before this revision. And ix_samples_pair_run is dropped: its columns are
the first two of ix_samples_pair_run_stratum, which serves the same queries.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 17:30:00
"""
from alembic import op
import sqlalchemy as sa

# the one line to edit when another 0009 lands before this revision
DOWN_REVISION = '0008'

revision = '0009'
down_revision = DOWN_REVISION
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'pending_samples',
        sa.Column('pair', sa.String(length=128), nullable=False),
        sa.Column('stratum', sa.String(length=255), nullable=False),
        sa.Column('n', sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint('pair', 'stratum'),
    )
    op.execute("INSERT INTO pending_samples (pair, stratum, n) SELECT pair, stratum, count(*) FROM samples "
               "WHERE run_id IS NULL GROUP BY pair, stratum")
    with op.batch_alter_table('samples', schema=None) as batch_op:
        batch_op.drop_index('ix_samples_pair_run')


def downgrade() -> None:
    with op.batch_alter_table('samples', schema=None) as batch_op:
        batch_op.create_index('ix_samples_pair_run', ['pair', 'run_id'], unique=False)
    op.drop_table('pending_samples')
