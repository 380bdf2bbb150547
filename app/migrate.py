"""Run Alembic migrations from code, so no alembic.ini has to be found on disk."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from app.db import ensure_database, make_engine
from app.services.attempt_partitions import is_attempt_partition
from config.settings import Settings

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def alembic_config() -> Config:
    """An Alembic config pointing at the packaged migrations."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


def include_name(name: str | None, type_: str, _parent_names: object) -> bool:
    """Leave the attempt log's partitions out of model comparisons: they come and go with the
    days, and the model describes only their parent."""
    return not (type_ == "table" and name is not None and is_attempt_partition(name))


def upgrade_database(settings: Settings) -> None:
    """Create the database if it is missing, then migrate it to the latest revision."""
    ensure_database(settings)
    engine = make_engine(settings)
    try:
        with engine.begin() as conn:
            cfg = alembic_config()
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
    finally:
        engine.dispose()
