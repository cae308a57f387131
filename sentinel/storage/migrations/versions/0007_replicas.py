"""replicas: who is running on this store (heartbeat rows), which replica started each run, and
which one holds an outbox row's delivery lease

Several daemons may share one PostgreSQL store. Each registers a ``replicas`` row and renews its
heartbeat; a row whose heartbeat is older than the lease belongs to a dead replica, whose runs
left 'running' and schedule leases are then taken over. On SQLite a live row of another owner
refuses the start (one replica only). ``runs.owner`` says which replica a run in progress
belongs to (NULL for runs from before this revision); ``outbox.claimed_by`` which replica holds
a row's delivery lease (``next_attempt_at`` is the lease's end while it is held).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 17:15:00
"""
from alembic import op
import sqlalchemy as sa

# the one line to edit when 0006 lands before this revision: "0006"
DOWN_REVISION = '0006'

revision = '0007'
down_revision = DOWN_REVISION
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('replicas',
    sa.Column('owner', sa.String(length=255), nullable=False),
    sa.Column('host', sa.String(length=255), nullable=False),
    sa.Column('pid', sa.Integer(), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('heartbeat_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('api', sa.String(length=255), nullable=True),
    sa.PrimaryKeyConstraint('owner')
    )
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('owner', sa.String(length=255), nullable=True))
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.add_column(sa.Column('claimed_by', sa.String(length=255), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_column('claimed_by')
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_column('owner')
    op.drop_table('replicas')
