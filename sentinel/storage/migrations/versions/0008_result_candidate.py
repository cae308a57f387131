"""check_results.candidate: which candidate of a pair with several (``candidates:`` in the pair's
config) a result judges. NULL for results of single-candidate pairs and for every result stored
before this revision.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 20:30:00
"""
from alembic import op
import sqlalchemy as sa

# the one line to edit when another 0008 lands before this revision
DOWN_REVISION = '0007'

revision = '0008'
down_revision = DOWN_REVISION
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('check_results', schema=None) as batch_op:
        batch_op.add_column(sa.Column('candidate', sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('check_results', schema=None) as batch_op:
        batch_op.drop_column('candidate')
