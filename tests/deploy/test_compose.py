"""The production deployment files, checked without Docker.

``docker-compose.yml``, ``docker/Dockerfile`` and ``.dockerignore`` are read
as data and held against the code they deploy: the command line parser, the
settings ``Settings.from_env`` reads, the Celery queues, the storage client,
pyproject.toml and the files in the repository. The compose file is also
validated against the Compose Specification schema vendored next to this file
(see ``compose_spec.NOTICE.md``).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import tomllib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

from layerlens_client.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
SCHEMA = Path(__file__).with_name("compose_spec.json")

#: What the API and every worker must wait for, and how.
APP_DEPENDENCIES = {"postgres": "service_healthy", "redis": "service_healthy",
                    "migrate": "service_completed_successfully",
                    "minio-bucket": "service_completed_successfully"}
ONE_SHOT_RESTART = (None, "no", "on-failure")


# ---------------------------------------------------------------- reading


_VARIABLE = re.compile(r"\$(?:\$|\{(?P<braced>[^}]*)\}|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))")
_BRACED = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>.*))?$", re.S)


def interpolate(value: str, env: dict[str, str], missing: list[str]) -> str:
    """Compose's ``$VAR``/``${VAR}``/``${VAR:-default}``/``$$`` substitution."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        if match.group("bare"):
            name, op, arg = match.group("bare"), None, ""
        else:
            parsed = _BRACED.match(match.group("braced"))
            if parsed is None:
                raise ValueError(f"invalid interpolation {match.group(0)!r} in {value!r}")
            name, op, arg = parsed["name"], parsed["op"], parsed["arg"] or ""
        current = env.get(name)
        if op in (":-", "-"):
            if current is None or (op == ":-" and current == ""):
                return interpolate(arg, env, missing)
            return current
        if current is None:
            missing.append(name)
            return ""
        return current

    return _VARIABLE.sub(replace, value)


def interpolate_all(node: Any, env: dict[str, str], missing: list[str]) -> Any:
    if isinstance(node, dict):
        return {key: interpolate_all(value, env, missing) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolate_all(value, env, missing) for value in node]
    if isinstance(node, str):
        return interpolate(node, env, missing)
    return node


@pytest.fixture(scope="module")
def raw_compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def compose(raw_compose: dict[str, Any]) -> dict[str, Any]:
    """The compose file as ``docker compose config`` would see it with no ``.env``."""
    missing: list[str] = []
    resolved = interpolate_all(raw_compose, {}, missing)
    assert not missing, (f"variables without a default: {sorted(set(missing))}; "
                         "`docker compose up` would substitute empty strings")
    return resolved


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def build_of(service: dict[str, Any]) -> dict[str, Any] | None:
    build = service.get("build")
    if isinstance(build, str):
        return {"context": build}
    return build


def is_layerlens(service: dict[str, Any]) -> bool:
    build = build_of(service)
    return build is not None and (ROOT / build.get("context", ".")
                                  / build.get("dockerfile", "Dockerfile")).resolve() == DOCKERFILE


@pytest.fixture(scope="module")
def layerlens_services(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    found = {name: svc for name, svc in services.items() if is_layerlens(svc)}
    assert found, "no service builds docker/Dockerfile"
    return found


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def command(service: dict[str, Any]) -> list[str]:
    cmd = service.get("command")
    return shlex.split(cmd) if isinstance(cmd, str) else list(cmd or [])


def option(argv: list[str], name: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def parse_cli(argv: list[str], where: str):  # type: ignore[no-untyped-def]
    assert argv and argv[0] == "layerlens", f"{where}: command {argv} does not run `layerlens`"
    try:
        return build_parser().parse_args(argv[1:])
    except SystemExit as exc:
        pytest.fail(f"{where}: `{shlex.join(argv)}` is not a valid layerlens command "
                    f"(argparse exit {exc.code})")


def worker_queues(argv: list[str]) -> list[str]:
    return parse_cli(argv, "worker").queues.split(",")


def default_services(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The services `docker compose up` starts (no profile)."""
    return {name: svc for name, svc in services.items() if not svc.get("profiles")}


# ---------------------------------------------------------------- compose


def test_compose_file_is_valid_against_the_compose_specification(compose):
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema validates the compose file")
    schema = json.loads(SCHEMA.read_text())
    # draft 2019-09, as its "$schema" says (in a spelling jsonschema does not recognise)
    validator = jsonschema.Draft201909Validator(schema)
    errors = sorted(validator.iter_errors(compose), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
                                 for e in errors)


def test_every_service_has_a_pinned_image_or_a_build(services, layerlens_services):
    assert set(layerlens_services) >= {"migrate", "api", "worker", "inspector"}
    for name, svc in services.items():
        image, build = svc.get("image"), build_of(svc)
        assert image or build, f"{name}: neither image nor build"
        if image:
            repository, _, tag = image.rpartition(":") if "@" not in image else (image, "", "@")
            assert repository and "/" not in tag, f"{name}: image {image!r} has no tag"
            assert tag not in ("latest", ""), f"{name}: image {image!r} is not pinned"
        if build:
            assert image, f"{name}: a built service needs an image name (shared by all of them)"
    images = {svc["image"] for svc in layerlens_services.values()}
    assert len(images) == 1, f"the layerlens services should share one image, got {images}"
    assert ":latest" not in COMPOSE_FILE.read_text()


def test_layerlens_services_run_real_cli_commands(layerlens_services):
    used = set()
    for name, svc in layerlens_services.items():
        args = parse_cli(command(svc), name)
        used.add(args.command)
        assert args.command in ("migrate", "api", "worker"), (
            f"{name}: `{args.command}` is not a production command (serve embeds a worker)")
    assert used == {"migrate", "api", "worker"}


def test_workers_consume_every_queue_the_service_routes_to(services, layerlens_services):
    from infra.config import Settings
    from infra.queue import INSPECT_QUEUE, JOBS_QUEUE, celery_config

    production = Settings(data_dir=Path("/nonexistent"), database_url="sqlite://",
                          broker_url="redis://redis:6379/0", storage_url="s3://bucket")
    routes = celery_config(production).get("task_routes", {})
    routed = {route["queue"] for route in routes.values()} | {JOBS_QUEUE, INSPECT_QUEUE}
    consumed: dict[str, set[str]] = {}
    for name, svc in default_services(layerlens_services).items():
        argv = command(svc)
        if parse_cli(argv, name).command == "worker":
            queues = worker_queues(argv)
            assert set(queues) <= routed, f"{name}: unknown queues {set(queues) - routed}"
            for queue in queues:
                consumed.setdefault(queue, set()).add(name)
    assert set(consumed) == routed, f"queues nobody consumes: {routed - set(consumed)}"
    gpu = parse_cli(command(services["worker"]), "worker")
    assert gpu.queues == JOBS_QUEUE and gpu.concurrency == 1, "GPU worker: jobs only, one at a time"
    assert worker_queues(command(services["inspector"])) == [INSPECT_QUEUE]


def settings_names_read(monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """The environment variables ``Settings.from_env`` asks for, observed, not grepped."""
    from infra.config import Settings

    class Recording(dict[str, str]):
        asked: set[str]

        def get(self, key, default=None):  # type: ignore[no-untyped-def, override]
            self.asked.add(key)
            return super().get(key, default)

        def __getitem__(self, key: str) -> str:
            self.asked.add(key)
            return super().__getitem__(key)

        def __contains__(self, key: object) -> bool:
            self.asked.add(str(key))
            return super().__contains__(key)

    recording = Recording()
    recording.asked = set()
    with monkeypatch.context() as patch:
        patch.setattr(os, "environ", recording)
        Settings.from_env()
    return {name for name in recording.asked if name.startswith("LAYERLENS_")}


def test_layerlens_environment_is_what_settings_reads(monkeypatch, services, layerlens_services):
    from infra.config import Settings

    readable = settings_names_read(monkeypatch)
    assert {"LAYERLENS_DATABASE_URL", "LAYERLENS_BROKER_URL", "LAYERLENS_STORAGE_URL"} <= readable
    envs = {name: environment(svc) for name, svc in layerlens_services.items()}
    for name, env in envs.items():
        unknown = {key for key in env if key.startswith("LAYERLENS_")} - readable
        assert not unknown, f"{name}: Settings.from_env reads no {sorted(unknown)}"
    shared = [{k: v for k, v in env.items() if k.startswith(("LAYERLENS_", "AWS_"))}
              for env in envs.values()]
    assert all(env == shared[0] for env in shared), "layerlens services disagree on settings"

    env = envs["api"]
    for key in readable - set(env):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = Settings.from_env()  # every value parses (ints, floats, paths)
    assert not settings.embedded
    assert settings.job_time_limit_s > 30, "the soft time limit is 30 s below the hard one"

    for url, scheme in ((settings.database_url, "postgresql+psycopg"),
                        (settings.broker_url, "redis"), (settings.s3_endpoint_url, "http")):
        parsed = urlparse(url)
        assert parsed.scheme == scheme, url
        assert parsed.hostname in services, f"{url}: no service named {parsed.hostname!r}"
    storage = urlparse(settings.storage_url)
    assert storage.scheme == "s3"
    bucket_cmd = command(services["minio-bucket"])
    assert f"local/{storage.netloc}" in bucket_cmd and "--ignore-existing" in bucket_cmd, (
        f"minio-bucket must create the bucket {storage.netloc!r}: {bucket_cmd}")

    mounted = {str(v).split(":")[1] for svc in layerlens_services.values()
               for v in svc.get("volumes", []) if isinstance(v, str)}
    for root in settings.dataset_roots:
        assert str(root) in mounted, f"dataset root {root} is not mounted"


def test_credentials_agree_between_services(services, layerlens_services):
    app = environment(layerlens_services["api"])
    postgres, minio = environment(services["postgres"]), environment(services["minio"])
    db = urlparse(app["LAYERLENS_DATABASE_URL"])
    assert (db.username, db.password, db.path.lstrip("/")) == (
        postgres["POSTGRES_USER"], postgres["POSTGRES_PASSWORD"], postgres["POSTGRES_DB"])
    assert app["AWS_ACCESS_KEY_ID"] == minio["MINIO_ROOT_USER"]
    assert app["AWS_SECRET_ACCESS_KEY"] == minio["MINIO_ROOT_PASSWORD"]
    assert app.get("AWS_DEFAULT_REGION"), "boto3 needs a region"
    mc = urlparse(environment(services["minio-bucket"])["MC_HOST_local"])
    assert (mc.username, mc.password) == (minio["MINIO_ROOT_USER"], minio["MINIO_ROOT_PASSWORD"])
    assert mc.hostname == "minio" and len(minio["MINIO_ROOT_PASSWORD"]) >= 8  # MinIO's minimum


def test_boto3_reaches_the_bucket_on_the_minio_service(monkeypatch, layerlens_services):
    """Path-style addressing: ``http://minio:9000/<bucket>``, not ``<bucket>.minio``."""
    from infra.storage import S3Storage

    env = environment(layerlens_services["api"])
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
        monkeypatch.setenv(key, env[key])
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    bucket = urlparse(env["LAYERLENS_STORAGE_URL"]).netloc
    storage = S3Storage(bucket, "", env["LAYERLENS_S3_ENDPOINT_URL"], Path("/nonexistent"))
    seen: list[str] = []

    class Sent(Exception):
        pass

    def capture(request, **_):  # type: ignore[no-untyped-def]
        seen.append(request.url)
        raise Sent

    storage._s3.meta.events.register("before-send.s3.*", capture)
    with pytest.raises(Sent):
        storage.ping()
    endpoint = urlparse(env["LAYERLENS_S3_ENDPOINT_URL"])
    assert urlparse(seen[0]).netloc == endpoint.netloc
    assert urlparse(seen[0]).path.strip("/") == bucket


def dependencies(service: dict[str, Any]) -> dict[str, str]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {name: spec.get("condition", "service_started") for name, spec in deps.items()}


def test_start_order(services, layerlens_services):
    for name in ("api", "worker", "inspector"):
        assert dependencies(services[name]) == APP_DEPENDENCIES, name
    for name, svc in layerlens_services.items():
        if name != "migrate":
            assert dependencies(svc) == APP_DEPENDENCIES, name
    assert dependencies(services["migrate"]) == {"postgres": "service_healthy"}
    assert dependencies(services["minio-bucket"]) == {"minio": "service_healthy"}

    for name, svc in services.items():
        for target, condition in dependencies(svc).items():
            assert target in services, f"{name} depends on unknown {target}"
            if condition == "service_healthy":
                assert services[target].get("healthcheck"), f"{target} has no healthcheck"
            if condition == "service_completed_successfully":
                assert services[target].get("restart") in ONE_SHOT_RESTART, (
                    f"{target} is one-shot but restarts ({services[target].get('restart')!r})")

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"dependency cycle {' -> '.join((*path, name))}"
        for target in dependencies(services[name]):
            visit(target, (*path, name))

    for name in services:
        visit(name, ())


def healthcheck_text(svc: dict[str, Any]) -> str:
    check = svc.get("healthcheck") or {}
    assert not check.get("disable"), "healthcheck disabled"
    test = check.get("test")
    assert test, "no healthcheck test"
    if isinstance(test, str):
        return test
    assert test[0] in ("CMD", "CMD-SHELL"), test
    return " ".join(test[1:])


def test_healthchecks(services):
    assert "pg_isready" in healthcheck_text(services["postgres"])
    assert "redis-cli ping" in healthcheck_text(services["redis"])
    minio = healthcheck_text(services["minio"])
    assert "curl" not in minio and "wget" not in minio, "the MinIO image ships neither"
    assert "mc ready local" in minio or "/minio/health/" in minio

    api = services["api"]
    check = healthcheck_text(api)
    assert "curl" not in check and "wget" not in check, "python:*-slim has neither"
    port = option(command(api), "--port")
    assert option(command(api), "--host") == "0.0.0.0", "the API must listen beyond loopback"
    assert re.search(rf"http://(localhost|127\.0\.0\.1):{port}/(healthz|readyz)\b", check), check
    published = [str(p).rsplit(":", 1)[-1] for p in api.get("ports", [])]
    assert published == [port], f"api publishes {published}, listens on {port}"


def test_gpu_worker_is_scalable_and_reserves_one_gpu(services, layerlens_services):
    worker = services["worker"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    for name, svc in layerlens_services.items():
        if parse_cli(command(svc), name).command == "worker":
            assert "container_name" not in svc, f"{name}: container_name prevents --scale"
            assert not svc.get("ports"), f"{name}: host ports prevent --scale"
    assert "deploy" not in services["inspector"], "the inspector needs no GPU"


def test_state_lives_on_named_volumes(compose, services):
    declared = set(compose.get("volumes") or {})
    for name, data in (("postgres", "/var/lib/postgresql/data"), ("minio", "/data"),
                       ("redis", "/data")):
        mounts = {v.split(":")[1]: v.split(":")[0] for v in services[name].get("volumes", [])}
        assert mounts.get(data) in declared, f"{name}: {data} is not on a named volume"


# ---------------------------------------------------------------- Dockerfile


def dockerfile_instructions() -> Iterator[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` with continuation lines joined and comments dropped."""
    logical = ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not logical and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            logical += stripped[:-1] + " "
            continue
        logical += stripped
        keyword, _, rest = logical.partition(" ")
        yield keyword.upper(), rest.strip()
        logical = ""
    assert not logical, "Dockerfile ends inside a continued line"


def exec_form(arguments: str) -> list[str]:
    assert arguments.startswith("["), f"use the exec form: {arguments}"
    return json.loads(arguments)


class Image:
    """What the Dockerfile builds, as far as these tests care."""

    def __init__(self) -> None:
        self.base: list[str] = []
        self.copies: dict[str, PurePosixPath] = {}  # source (relative to the context) -> path
        self.runs: list[tuple[PurePosixPath, str]] = []  # (workdir, command)
        self.env: dict[str, str] = {}
        self.user = "root"
        self.exposed: list[str] = []
        self.cmd: list[str] = []
        workdir = PurePosixPath("/")
        for keyword, args in dockerfile_instructions():
            if keyword == "FROM":
                self.base.append(args.split()[0])
            elif keyword == "WORKDIR":
                workdir = workdir / args
            elif keyword in ("COPY", "ADD"):
                parts = [p for p in shlex.split(args) if not p.startswith("--")]
                *sources, dest = parts
                target = workdir / dest
                for source in sources:
                    name = source.rstrip("/")
                    is_dir = (ROOT / name).is_dir()
                    into = dest.endswith("/") or len(sources) > 1
                    self.copies[name] = (target if is_dir or not into
                                         else target / PurePosixPath(name).name)
            elif keyword == "RUN":
                self.runs.append((workdir, args))
            elif keyword == "ENV":
                for item in shlex.split(args):
                    key, _, value = item.partition("=")
                    self.env[key] = value
            elif keyword == "USER":
                self.user = args.split(":")[0]
            elif keyword == "EXPOSE":
                self.exposed += args.split()
            elif keyword == "CMD":
                self.cmd = exec_form(args)

    def path_of(self, repo_path: str) -> PurePosixPath:
        """Where the repository file ``repo_path`` lands in the image."""
        for source, target in sorted(self.copies.items(), key=lambda kv: -len(kv[0])):
            if repo_path == source:
                return target
            if repo_path.startswith(source + "/"):
                return target / repo_path[len(source) + 1:]
        raise AssertionError(f"{repo_path} is not copied into the image")


@pytest.fixture(scope="module")
def image() -> Image:
    return Image()


@pytest.fixture(scope="module")
def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_compose_builds_the_dockerfile_that_exists(layerlens_services):
    assert DOCKERFILE.is_file()
    for name, svc in layerlens_services.items():
        build = build_of(svc)
        assert build is not None
        assert (ROOT / build.get("context", ".")).resolve() == ROOT, f"{name}: context is not ."


def test_dockerfile_base_image_is_pinned_python_311(image, pyproject):
    assert image.base, "no FROM"
    for base in image.base:
        _, _, tag = base.partition(":")
        assert tag and tag != "latest", f"FROM {base} is not pinned"
    assert re.fullmatch(r"python:3\.11(\.\d+)?-slim(-\w+)?", image.base[-1]), image.base[-1]
    assert pyproject["project"]["requires-python"] == ">=3.11"


def test_every_copied_path_exists_and_is_in_the_build_context(image):
    assert image.copies
    rules = dockerignore_rules()
    for source in image.copies:
        assert (ROOT / source).exists(), f"COPY {source}: no such path in the repository"
        assert not ignored(source, rules), f"COPY {source}: excluded by .dockerignore"
        if (ROOT / source).is_dir():
            for path in (ROOT / source).rglob("*"):
                relative = path.relative_to(ROOT).as_posix()
                if path.is_file() and "__pycache__" not in path.parts:
                    assert not ignored(relative, rules), f"{relative}: excluded by .dockerignore"


def test_image_holds_the_packages_pyproject_installs(image, pyproject):
    setuptools = pyproject["tool"]["setuptools"]
    patterns = setuptools["packages"]["find"]["include"]
    packages = [p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file()
                and any(re.fullmatch(pat.replace("*", ".*"), p.name) for pat in patterns)]
    assert {"layerlens", "app", "infra", "service", "workers"} <= set(packages)
    for name in [*packages, "pyproject.toml", pyproject["project"]["readme"], "alembic.ini",
                 "migrations"]:
        image.path_of(name)
    for package in setuptools.get("package-data", {}):
        image.path_of(package.replace(".", "/"))


def test_the_client_is_installed_before_the_package_that_depends_on_it(image, pyproject):
    """layerlens-client (not on PyPI) owns the `layerlens` command: from client/, first."""
    assert any(d.startswith("layerlens-client") for d in pyproject["project"]["dependencies"])
    client = image.path_of("client/pyproject.toml").parent
    runs = [run for _, run in image.runs]
    installs_client = [i for i, run in enumerate(runs) if f"pip install --no-deps {client}" in run]
    installs_package = [i for i, run in enumerate(runs) if re.search(r"pip install\b.*-e \.", run)]
    assert installs_client and installs_package, "no pip install of client/ or of the package"
    assert installs_client[0] < installs_package[0]
    image.path_of("client/layerlens_client")


def test_migrations_are_where_infra_db_session_looks(image):
    """``MIGRATIONS = Path(session.py).parents[2] / "migrations"`` must hold in the image."""
    from infra.db import session

    repo_session = Path(session.__file__).resolve().relative_to(ROOT).as_posix()
    rule = (ROOT / repo_session).parents[2] / "migrations"
    assert rule == session.MIGRATIONS, "session.py changed how it finds migrations/"
    in_image = image.path_of(repo_session).parents[2] / "migrations"
    copied = image.path_of("migrations")
    assert copied == in_image, f"migrations copied to {copied}, session.py looks in {in_image}"
    assert (ROOT / "migrations" / "env.py").is_file()

    # ...and `infra` must be imported from that copy, not from site-packages.
    source_dir = image.path_of("infra").parent
    editable = any(re.search(r"pip install\b.*(\s-e\s+\.|--editable)", run) and wd == source_dir
                   for wd, run in image.runs)
    on_path = str(source_dir) in image.env.get("PYTHONPATH", "").split(":")
    assert editable or on_path, (
        f"install with `pip install -e .` in {source_dir} (or put it on PYTHONPATH): a regular "
        "install imports `infra` from site-packages, where there is no migrations/ folder")


def test_torch_is_installed_first_with_pyprojects_pin(image, pyproject):
    pins = [d for d in pyproject["project"]["dependencies"] if re.match(r"torch\s*==", d)]
    assert len(pins) == 1, "pyproject pins torch exactly"
    version = pins[0].split("==")[1].strip()
    installs = [run for _, run in image.runs if "pip install" in run]
    assert installs and f"torch=={version}" in installs[0], (
        f"the first pip install must be torch=={version} alone: {installs[:1]}")
    assert "index-url" not in installs[0], "GPU workers need PyPI's (CUDA) torch build"


def test_image_runs_the_api_as_a_non_root_user(image):
    assert image.user not in ("root", "0"), "the image runs as root"
    assert image.env.get("LAYERLENS_DATA_DIR") == "/var/lib/layerlens"
    assert "8000" in image.exposed
    args = parse_cli(image.cmd, "Dockerfile CMD")
    assert args.command == "api" and args.host == "0.0.0.0" and args.port == 8000


# ---------------------------------------------------------------- .dockerignore


def dockerignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    """``(negated, regex)`` per line, in order; the last matching rule decides."""
    rules = []
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = line.lstrip("!").strip().strip("/")
        regex = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex, i = regex + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                regex, i = regex + ".*", i + 2
            elif pattern[i] == "*":
                regex, i = regex + "[^/]*", i + 1
            elif pattern[i] == "?":
                regex, i = regex + "[^/]", i + 1
            elif pattern[i] == "[":
                end = pattern.index("]", i)
                regex, i = regex + pattern[i:end + 1], end + 1
            else:
                regex, i = regex + re.escape(pattern[i]), i + 1
        rules.append((negated, re.compile(regex)))
    return rules


def ignored(path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Docker's rule: a path is excluded when it, or a folder above it, matches."""
    parts = path.split("/")
    prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    verdict = False
    for negated, regex in rules:
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            verdict = not negated
    return verdict


def test_dockerignore_keeps_local_state_out_of_the_context():
    rules = dockerignore_rules()
    for path in (".venv/bin/python", ".git/HEAD", "layerlens-data/layerlens.db",
                 "demo-output/report.html", "tests/conftest.py", ".pytest_cache/v",
                 ".ruff_cache/x", ".mypy_cache/x", "layerlens/__pycache__",
                 "infra/db/__pycache__", "app/cli.pyc", "layerlens.egg-info/PKG-INFO"):
        assert ignored(path, rules), f"{path} would be sent to the Docker daemon"
    for path in ("pyproject.toml", "README.md", "app/cli.py", "migrations/env.py"):
        assert not ignored(path, rules), f"{path} is needed by the build"
