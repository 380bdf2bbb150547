"""Alembic environment: the URL comes from Settings, or a connection handed in by the caller."""

from alembic import context

from app.migrate import include_name
from app.models import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(
            connection=connection, target_metadata=target_metadata, include_name=include_name
        )
        with context.begin_transaction():
            context.run_migrations()
        return

    from app.db import make_engine
    from config.settings import Settings

    # One connection for the run, disposed of after it.
    engine = make_engine(Settings.from_env(), pool_size=1, max_overflow=0)
    with engine.connect() as conn:
        context.configure(
            connection=conn, target_metadata=target_metadata, include_name=include_name
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run_migrations_online()
