"""Storage: SQLAlchemy 2 tables, an Alembic migration, and the repository the daemon uses."""
from .repository import Store, open_store  # noqa: F401
