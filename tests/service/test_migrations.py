"""Alembic is the only way the schema is made, and it matches the ORM models exactly."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from alembic import command
from sqlalchemy import inspect

from infra.db.session import SchemaNotMigrated, alembic_config, make_engine, upgrade
from service.app import create_app
from tests.e2e.launch import fresh_postgres_database, postgres_available
from tests.service.support import embedded_settings

TABLES = {"models", "datasets", "jobs", "analysis_results", "artifacts", "api_keys",
          "alembic_version"}


def _upgrade_then_check(url: str) -> None:
    upgrade(url)
    command.check(alembic_config(url))  # raises when the models and the schema differ
    engine = make_engine(url)
    assert set(inspect(engine).get_table_names()) == TABLES
    engine.dispose()


def test_upgrade_head_on_empty_sqlite_has_no_drift(tmp_path):
    _upgrade_then_check(f"sqlite:///{tmp_path / 'empty.db'}")


def test_upgrade_head_on_empty_postgresql_has_no_drift():
    reason = postgres_available()
    if reason and os.environ.get("CI") != "true":
        pytest.skip(reason)
    with fresh_postgres_database() as url:
        _upgrade_then_check(url)


def test_downgrade_to_base_removes_every_table(tmp_path):
    url = f"sqlite:///{tmp_path / 'down.db'}"
    upgrade(url)
    command.downgrade(alembic_config(url), "base")
    engine = make_engine(url)
    assert set(inspect(engine).get_table_names()) == {"alembic_version"}
    engine.dispose()


def test_the_api_refuses_an_unmigrated_database_and_says_how_to_migrate(tmp_path):
    with pytest.raises(SchemaNotMigrated, match="layerlens migrate"):
        create_app(embedded_settings(tmp_path))


def test_layerlens_api_on_an_unmigrated_database_exits_2_with_one_line(tmp_path):
    env = {**os.environ, "LAYERLENS_DATA_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "app", "api", "--port", "1"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "layerlens migrate" in done.stderr
    assert "Traceback" not in done.stderr
