"""Settings of an embedded deployment in a temp folder."""

from __future__ import annotations

from pathlib import Path

from infra.config import Settings


def embedded_settings(root: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "data_dir": root, "database_url": f"sqlite:///{root / 'layerlens.db'}",
        "broker_url": "filesystem://", "storage_url": (root / "storage").as_uri(),
        "auth_required": False}
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]
