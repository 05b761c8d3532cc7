"""Engines and sessions, and the check that the schema is migrated."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"


class SchemaNotMigrated(RuntimeError):
    """The database lacks the schema this code expects."""


def make_engine(url: str) -> Engine:
    """An engine; SQLite gets WAL and a busy timeout so the API and workers can share it."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection, _record):
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session that commits on success and rolls back on any error."""
    with factory() as session, session.begin():
        yield session


def alembic_config(url: str):
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str) -> None:
    """``alembic upgrade head`` on ``url``."""
    from alembic import command

    make_engine(url).dispose()  # creates a SQLite file's folder
    command.upgrade(alembic_config(url), "head")


def require_migrated(engine: Engine) -> None:
    """Raise :class:`SchemaNotMigrated`, saying how to migrate, unless the schema is at head."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config(str(engine.url))).get_current_head()
    with engine.connect() as connection:
        current = MigrationContext.configure(connection).get_current_revision()
    if current != head:
        where = engine.url.render_as_string(hide_password=True)
        raise SchemaNotMigrated(
            f"the database {where} is at schema revision {current or 'none'}, this code needs "
            f"{head}: run `layerlens migrate` (alembic upgrade head) with the same "
            "LAYERLENS_DATABASE_URL, then start again")
