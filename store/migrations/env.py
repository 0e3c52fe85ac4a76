"""Alembic environment: runs on the connection leadhub hands it (SQLite or PostgreSQL alike)."""

from alembic import context

from leadhub.store.models import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations with `leadhub db upgrade`; it provides the connection")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
