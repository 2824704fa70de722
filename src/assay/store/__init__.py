"""The store: SQLAlchemy tables and engine, and the Alembic migrations that are its only way to change."""
