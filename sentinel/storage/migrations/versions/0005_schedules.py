"""revalidation schedules in Sentinel's own table; APScheduler's pickled job store is dropped

APScheduler 3's SQLAlchemy job store keeps each job as a pickle (``apscheduler_jobs.job_state``)
and unpickles it at start: whoever can write that table runs code in the daemon. The schedules
now live in ``schedules`` (plain columns). Existing next run times are carried over from the
plain float column ``apscheduler_jobs.next_run_time``; ``job_state`` is never read. The interval
sat inside the pickle, so carried-over rows have ``interval_seconds`` NULL and the next start
adopts the configured interval while keeping the time.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 14:30:00
"""
import datetime as dt
import math

from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

_JOB_PREFIX = 'revalidate:'


def upgrade() -> None:
    op.create_table('schedules',
    sa.Column('pair', sa.String(length=128), nullable=False),
    sa.Column('interval_seconds', sa.Float(), nullable=True),
    sa.Column('next_run_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('lease_owner', sa.String(length=255), nullable=True),
    sa.Column('lease_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('pair')
    )
    with op.batch_alter_table('schedules', schema=None) as batch_op:
        batch_op.create_index('ix_schedules_next_run', ['next_run_at'], unique=False)

    bind = op.get_bind()
    if 'apscheduler_jobs' not in sa.inspect(bind).get_table_names():
        return
    # only the two plain columns: selecting job_state would hand a pickle to Python
    jobs = sa.table('apscheduler_jobs', sa.column('id', sa.String()), sa.column('next_run_time', sa.Float()))
    schedules = sa.table('schedules', sa.column('pair', sa.String()), sa.column('next_run_at', sa.DateTime(timezone=True)),
                         sa.column('updated_at', sa.DateTime(timezone=True)))
    now = dt.datetime.now(dt.timezone.utc)
    rows = []
    for job_id, next_run_time in bind.execute(sa.select(jobs.c.id, jobs.c.next_run_time)):
        pair = job_id[len(_JOB_PREFIX):] if isinstance(job_id, str) and job_id.startswith(_JOB_PREFIX) else ''
        if pair and len(pair) <= 128:
            rows.append({'pair': pair, 'next_run_at': _epoch(next_run_time), 'updated_at': now})
    if rows:
        bind.execute(sa.insert(schedules), rows)
    op.drop_table('apscheduler_jobs')


def _epoch(value: object) -> 'dt.datetime | None':
    """APScheduler's next_run_time (epoch seconds, NULL for a paused job) as a UTC datetime; a
    value that is not a usable time (a crafted row) counts as unset: the next start schedules
    that pair one interval ahead."""
    try:
        seconds = float(value)  # type: ignore[arg-type]
        if not math.isfinite(seconds):
            return None
        return dt.datetime.fromtimestamp(seconds, dt.timezone.utc)
    except (TypeError, ValueError, OverflowError, OSError):
        return None


def downgrade() -> None:
    # APScheduler recreated its own table at start; the old code schedules every pair afresh
    with op.batch_alter_table('schedules', schema=None) as batch_op:
        batch_op.drop_index('ix_schedules_next_run')
    op.drop_table('schedules')
