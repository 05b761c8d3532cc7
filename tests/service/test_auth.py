"""API keys and tenants: keys stored hashed, every data route needs one, tenants see only
their own models, datasets, jobs and artifacts (404, not 403)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys

import pytest
from fastapi.testclient import TestClient

from infra.db.models import Dataset, Model
from infra.db.session import make_engine, session_factory, transaction, upgrade
from service.app import create_app
from service.auth import create_key, revoke_key
from tests.service.support import embedded_settings

PROBLEM = "application/problem+json"


@pytest.fixture
def world(tmp_path):
    settings = embedded_settings(tmp_path, auth_required=True)
    upgrade(settings.database_url)
    sessions = session_factory(make_engine(settings.database_url))
    keys = {t: create_key(sessions, t) for t in ("acme", "globex")}
    rows = {}
    with transaction(sessions) as session:
        for tenant in keys:
            model = Model(tenant=tenant, sha256="0" * 64, size_bytes=1, name="m",
                          status="ready", format="onnx", input_shape=[4], layers=[])
            dataset = Dataset(tenant=tenant, sha256="1" * 64, size_bytes=1, name="d",
                              file_format="npz", status="ready", n_samples=3, x_shape=[3, 4],
                              n_classes=2)
            session.add_all([model, dataset])
            session.flush()
            rows[tenant] = (model.id, dataset.id)
    with TestClient(create_app(settings)) as client:
        yield client, keys, rows, sessions, settings


def _as(key) -> dict[str, str]:
    return {"Authorization": f"Bearer {key.key}"}


def test_health_metrics_and_docs_need_no_key(world):
    client, *_ = world
    for path in ("/healthz", "/readyz", "/metrics", "/docs", "/openapi.json"):
        assert client.get(path).status_code == 200, path


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer ll_nope"},
                                     {"Authorization": "Basic dXNlcjpwdw=="}])
def test_data_routes_without_a_valid_key_are_401(world, headers):
    client, *_ = world
    for method, path in (("GET", "/v1/models"), ("GET", "/v1/jobs"), ("POST", "/v1/jobs"),
                         ("POST", "/v1/models"), ("GET", "/v1/jobs/x/report")):
        answer = client.request(method, path, headers=headers)
        assert answer.status_code == 401, (method, path)
        assert answer.headers["content-type"] == PROBLEM
        assert answer.headers["www-authenticate"].startswith("Bearer")


def test_a_tenant_never_sees_another_tenants_things(world):
    client, keys, rows, *_ = world
    acme, globex = keys["acme"], keys["globex"]
    model_a, dataset_a = rows["acme"]
    model_b, _ = rows["globex"]
    assert client.get(f"/v1/models/{model_a}", headers=_as(acme)).status_code == 200
    assert client.get(f"/v1/models/{model_a}", headers=_as(globex)).status_code == 404
    assert client.get(f"/v1/datasets/{dataset_a}", headers=_as(globex)).status_code == 404
    assert [m["id"] for m in client.get("/v1/models", headers=_as(globex)).json()["items"]] == [
        model_b]
    refused = client.post("/v1/jobs", headers=_as(globex),
                          json={"model_id": model_a, "dataset": "builtin:iris"})
    assert refused.status_code == 422 and "no model" in refused.json()["detail"]
    borrowed = client.post("/v1/jobs", headers=_as(globex),
                           json={"model_id": model_b, "dataset": f"dataset:{dataset_a}"})
    assert borrowed.status_code == 422 and "no uploaded dataset" in borrowed.json()["detail"]
    job = client.post("/v1/jobs", headers=_as(acme),
                      json={"model_id": model_a, "dataset": "builtin:iris"}).json()
    for method, path in (("GET", ""), ("POST", "/cancel"), ("GET", "/report"),
                         ("GET", "/report.html"), ("GET", "/artifacts"),
                         ("GET", "/artifacts/activations.png")):
        answer = client.request(method, f"/v1/jobs/{job['id']}{path}", headers=_as(globex))
        assert answer.status_code == 404, path
    assert client.get("/v1/jobs", headers=_as(globex)).json()["items"] == []
    assert client.get(f"/v1/jobs/{job['id']}", headers=_as(acme)).json()["status"] == "queued"


def test_idempotency_keys_are_per_tenant(world):
    client, keys, rows, *_ = world
    ids = []
    for tenant in ("acme", "globex"):
        answer = client.post("/v1/jobs", headers={**_as(keys[tenant]), "Idempotency-Key": "k"},
                             json={"model_id": rows[tenant][0], "dataset": "builtin:iris"})
        assert answer.status_code == 202
        ids.append(answer.json()["id"])
    assert ids[0] != ids[1]


def test_a_revoked_key_stops_working_and_keys_are_stored_hashed(world):
    client, keys, _, sessions, settings = world
    acme = keys["acme"]
    assert client.get("/v1/models", headers=_as(acme)).status_code == 200
    assert revoke_key(sessions, acme.id)
    assert client.get("/v1/models", headers=_as(acme)).status_code == 401
    database = settings.database_url.removeprefix("sqlite:///")
    with sqlite3.connect(database) as raw:
        dump = "\n".join(raw.iterdump())
    assert acme.key not in dump and keys["globex"].key not in dump


def _cli(*args: str, data_dir) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LAYERLENS_DATA_DIR": str(data_dir)}
    return subprocess.run([sys.executable, "-m", "app", *args], env=env,
                          capture_output=True, text=True, timeout=120)


def test_the_keys_command_creates_lists_and_revokes(tmp_path):
    assert _cli("migrate", data_dir=tmp_path).returncode == 0
    created = _cli("keys", "create", "--tenant", "acme", "--name", "ci", data_dir=tmp_path)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip().splitlines()[-1]
    assert key.startswith("ll_") and len(key) > 40
    listed = _cli("keys", "list", data_dir=tmp_path).stdout
    assert "acme" in listed and key[:10] in listed and key not in listed
    key_id = created.stdout.split()[2]
    assert _cli("keys", "revoke", key_id, data_dir=tmp_path).returncode == 0
    assert "revoked" in _cli("keys", "list", data_dir=tmp_path).stdout
    again = _cli("keys", "revoke", key_id, data_dir=tmp_path)
    assert again.returncode == 2 and "no active key" in again.stderr
    bad = _cli("keys", "create", "--tenant", "Bad Name!", data_dir=tmp_path)
    assert bad.returncode == 2 and "tenant must be" in bad.stderr


def test_serve_without_keys_only_on_loopback(tmp_path):
    env = {**os.environ, "LAYERLENS_DATA_DIR": str(tmp_path), "LAYERLENS_AUTH": "off"}
    done = subprocess.run([sys.executable, "-m", "app", "serve", "--host", "0.0.0.0",
                           "--port", "1"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "only on loopback" in done.stderr and "Traceback" not in done.stderr
