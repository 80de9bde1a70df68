"""The store: SQLAlchemy 2 async engine, sessions, and per-plugin Alembic migrations."""

from hostcore.db.engine import Base, Database

__all__ = ["Base", "Database"]
