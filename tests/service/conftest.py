"""A migrated embedded deployment (SQLite, filesystem broker, local storage) in a temp folder."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from infra.config import Settings
from infra.db.models import Model
from infra.db.session import make_engine, session_factory, transaction, upgrade
from service.app import create_app
from tests.service.support import embedded_settings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    config = embedded_settings(tmp_path)
    upgrade(config.database_url)
    return config


@pytest.fixture
def sessions(settings: Settings):  # type: ignore[no-untyped-def]
    engine = make_engine(settings.database_url)
    yield session_factory(engine)
    engine.dispose()


@pytest.fixture
def api(settings: Settings) -> TestClient:
    """The real ASGI app in-process; no worker runs, so uploads are not inspected here."""
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.fixture
def ready_model(sessions) -> str:  # type: ignore[no-untyped-def]
    """A model row as a worker leaves it after inspection."""
    model = Model(sha256="0" * 64, size_bytes=1, name="m.onnx", status="ready", format="onnx",
                  input_shape=[64], layers=[{"name": "fc", "shape": [10], "op": "Gemm"}])
    with transaction(sessions) as session:
        session.add(model)
    return model.id
