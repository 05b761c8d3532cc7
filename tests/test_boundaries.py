"""The package boundaries: data flows client -> service -> workers -> engine, never back.

``layerlens`` (the engine) imports none of the packages around it and loads no web, SQL or
queue library; ``infra`` (shared by API and workers) imports neither of them; ``workers``
never import ``service``; ``service`` never imports ``workers``, ``app`` or torch.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: what each package must not import, statically (anywhere in its modules)
FORBIDDEN_IMPORTS = {
    "layerlens": {"app", "infra", "service", "workers", "layerlens_client"},
    "infra": {"app", "service", "workers", "torch"},
    "service": {"app", "workers", "torch"},
    "workers": {"app", "service"},
}
#: libraries of the service side that importing the engine must not load
SERVICE_LIBRARIES = ("fastapi", "starlette", "sqlalchemy", "celery", "kombu", "redis", "httpx")


def imported_packages(path: Path) -> set[str]:
    """The top-level names of every absolute import in one file."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN_IMPORTS))
def test_no_import_crosses_a_boundary(package: str) -> None:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files
    crossings = [f"{path.relative_to(ROOT)} imports {name}" for path in files
                 for name in sorted(imported_packages(path) & FORBIDDEN_IMPORTS[package])]
    assert not crossings, "\n".join(crossings)


def loaded_after(code: str) -> list[str]:
    """Top-level modules a fresh interpreter holds after running ``code``."""
    probe = f"{code}\nimport sys; print(' '.join(sorted({{m.split('.')[0] for m in sys.modules}})))"
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


@pytest.mark.slow
def test_the_engine_loads_no_service_library() -> None:
    # every module of the engine (analyses, models, report, data, ...), not only the top
    code = ("import importlib, pkgutil, layerlens, layerlens.analyses, layerlens.models\n"
            "for info in pkgutil.walk_packages(layerlens.__path__, 'layerlens.'):\n"
            "    if not info.name.endswith('__main__'):\n"
            "        importlib.import_module(info.name)")
    loaded = loaded_after(code)
    assert "torch" in loaded  # the walk did reach the engine's science
    assert not set(SERVICE_LIBRARIES) & set(loaded), set(SERVICE_LIBRARIES) & set(loaded)


def test_the_api_process_never_imports_torch() -> None:
    # what `layerlens serve`/`api` load in the API process, and the workers' Celery app
    # (their models open in a child process)
    code = ("import pkgutil, importlib, service, app.cli, app.commands, workers.celery_app\n"
            "import service.app\n"
            "for info in pkgutil.walk_packages(service.__path__, 'service.'):\n"
            "    importlib.import_module(info.name)")
    loaded = loaded_after(code)
    assert "fastapi" in loaded
    assert "torch" not in loaded and "onnxruntime" not in loaded
