"""The generated project's Dockerfile and compose.yaml, linted for every option and run for real.

Fast: for each option combination, compose.yaml validates against the compose specification
and hadolint finds nothing in the Dockerfile.

Slow: the default bake, as generated (its uv.lock included), has its image built with podman
as docs/containers.md describes: a Debian base image built with debootstrap stands in for
python:X-slim, and uv comes from a local image holding the
host's uv binary, since no registry is reachable. In the image, compose's migrate command
migrates a fresh PostgreSQL database, and the image's own CMD, as ``podman image inspect``
reports it, serves on a free port as a non-root user while its HEALTHCHECK passes; with the
environment of compose's pgbouncer profile it serves through a real PgBouncer in transaction
mode (with DATABASE_PGBOUNCER=false there, 117 of 300 readiness probes failed in one run).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import yaml

from tests.helpers import (
    OPTIONS,
    REPO_ROOT,
    PgBouncer,
    PostgresServer,
    free_port,
    run,
    tool,
)
from tests.python_root import ROOTS, python_root

# The tests that use the built image share one worker (--dist loadgroup), which builds it once.
IMAGE_WORKER = pytest.mark.xdist_group("container-image")
COMBINATIONS = [
    {"database": database, "python_version": version, "example_domain": domain}
    for domain in OPTIONS["example_domain"]
    for database in OPTIONS["database"]
    for version in OPTIONS["python_version"]
]
COMBINATION_IDS = [
    f"{c['example_domain']}-{c['database']}-py{c['python_version']}" for c in COMBINATIONS
]
# The Debian release whose python3 is each supported version (docs/containers.md, section 2);
# the Pythons only sid ships are in the roots of tests/python_root.py.
DEBIAN_RELEASES = {"3.11": "bookworm", "3.13": "trixie"}
# What those roots hold only to run commands on the host's behalf (its uv's mount point).
ROOT_ONLY = ("./usr/local/bin/uv", "./project", "./uv-cache", "./root/.cache")
BASE_IMAGE = "localhost/debian-python:{version}"
SERVER_PROCESS = re.compile(r"Started (?:parent|server) process \[(\d+)\]")


def bake(cookies: Any, **context: str) -> Path:
    result = cookies.bake(extra_context=context)
    assert result.exception is None, result.exception
    return Path(result.project_path)


def compose_services(project: Path) -> dict[str, Any]:
    services: dict[str, Any] = yaml.safe_load((project / "compose.yaml").read_text())["services"]
    return services


# --- Fast: every option combination ---------------------------------------------------------


@pytest.fixture(scope="module", params=COMBINATIONS, ids=COMBINATION_IDS)
def combination(
    request: pytest.FixtureRequest, cookies_session: Any
) -> tuple[Path, dict[str, str]]:
    return bake(cookies_session, **request.param), request.param


def test_compose_file_matches_the_compose_specification(
    combination: tuple[Path, dict[str, str]],
) -> None:
    project, _ = combination
    check = tool("check-jsonschema")
    run([check, "--builtin-schema", "vendor.compose-spec", "compose.yaml"], cwd=project)


def test_hadolint_finds_nothing_in_the_dockerfile(combination: tuple[Path, dict[str, str]]) -> None:
    project, _ = combination
    # The default failure threshold is "info": a warning or a style note fails too.
    run([tool("hadolint"), "--no-color", "Dockerfile"], cwd=project)


def test_dockerfile_base_image_follows_the_python_version(
    combination: tuple[Path, dict[str, str]],
) -> None:
    project, options = combination
    arguments = re.findall(r"^ARG (\w+)=(\S+)$", (project / "Dockerfile").read_text(), re.M)
    assert ("PYTHON_IMAGE", f"python:{options['python_version']}-slim") in arguments


def test_compose_runs_one_image_built_once_with_migrations_first(
    combination: tuple[Path, dict[str, str]],
) -> None:
    project, _ = combination
    services = compose_services(project)
    built = [name for name, service in services.items() if "build" in service]
    # Two services building one tag race each other under compose's bake builder.
    assert built == ["migrate"]
    image = services["migrate"]["image"]
    assert services["app"]["image"] == services["app-pgbouncer"]["image"] == image
    assert services["migrate"]["depends_on"] == {"db": {"condition": "service_healthy"}}
    for app in ("app", "app-pgbouncer"):
        # The image's own CMD: what the slow test runs is what compose runs.
        assert "command" not in services[app]
        assert "entrypoint" not in services[app]
        assert services[app]["depends_on"]["migrate"] == {
            "condition": "service_completed_successfully"
        }


def test_compose_pgbouncer_profile_puts_pgbouncer_in_front_of_the_app(
    combination: tuple[Path, dict[str, str]],
) -> None:
    project, _ = combination
    services = compose_services(project)
    assert services["pgbouncer"]["profiles"] == ["pgbouncer"]
    assert services["pgbouncer"]["environment"]["POOL_MODE"] == "transaction"
    behind = services["app-pgbouncer"]
    assert behind["profiles"] == ["pgbouncer"]
    assert behind["environment"]["DATABASE_PGBOUNCER"] == "true"
    assert "@pgbouncer:5432/" in behind["environment"]["DATABASE_URL"]
    assert "@db:5432/" in services["app"]["environment"]["DATABASE_URL"]
    assert "profiles" not in services["app"]


def test_the_checks_reject_a_broken_compose_file_and_dockerfile(tmp_path: Path) -> None:
    # The two checks above can fail: each catches a known mistake.
    (tmp_path / "compose.yaml").write_text(
        "services:\n  app:\n    image: x\n    depends_on:\n      db:\n"
        "        condition: service_ready\n"
    )
    (tmp_path / "Dockerfile").write_text("FROM python:3.13-slim\nWORKDIR app\n")
    checks = [
        [tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", "compose.yaml"],
        [tool("hadolint"), "--no-color", "Dockerfile"],
    ]
    for check in checks:
        result = subprocess.run(check, cwd=tmp_path, capture_output=True, text=True, check=False)
        assert result.returncode != 0, (check, result.stdout)


# --- Slow: build the default bake and run it -------------------------------------------------


@dataclass(frozen=True)
class Image:
    """A built image of a baked project and what ``podman image inspect`` says about it."""

    tag: str
    project: Path
    inspect: dict[str, Any]

    @property
    def config(self) -> dict[str, Any]:
        config: dict[str, Any] = self.inspect["Config"]
        return config

    @property
    def env(self) -> dict[str, str]:
        return dict(item.split("=", 1) for item in self.config.get("Env", []))

    @property
    def package(self) -> str:
        return next((self.project / "src").iterdir()).name


def podman_inspect(image: str) -> dict[str, Any]:
    result = run([tool("podman"), "image", "inspect", image], cwd=REPO_ROOT)
    inspected: dict[str, Any] = json.loads(result.stdout)[0]
    return inspected


def image_exists(image: str) -> bool:
    probe = subprocess.run([tool("podman"), "image", "exists", image], check=False)
    return probe.returncode == 0


def import_image(rootfs: Path, image: str, *excluded: str) -> None:
    """Import the root file system ``rootfs`` as ``image``, with PATH as Debian's own images
    set it (an imported tarball has no environment)."""
    exclusions = " ".join(f"--exclude={path}" for path in excluded)
    run(
        f"tar -C {rootfs} {exclusions} -c . | {tool('podman')} import"
        " --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'"
        f" - {image}",
        cwd=REPO_ROOT,
    )


def base_image(python_version: str) -> str:
    """The Debian stand-in for python:X-slim, built once per machine (45 s to 3 min)."""
    image = BASE_IMAGE.format(version=python_version)
    if image_exists(image):
        return image
    debootstrap = tool("debootstrap")
    if python_version in ROOTS:
        # The cached root the bakes of that Python run in: python3 is that version there.
        import_image(python_root(python_version), image, *ROOT_ONLY)
        return image
    release = DEBIAN_RELEASES.get(python_version)
    if release is None:
        pytest.fail(f"no Debian release ships Python {python_version}", pytrace=False)
    rootfs = Path(tempfile.mkdtemp(prefix="debian-python-"))
    try:
        run(
            [
                debootstrap,
                "--variant=minbase",
                "--include=python3,python3-venv,ca-certificates",
                release,
                str(rootfs),
            ],
            cwd=REPO_ROOT,
            timeout=900,
        )
        import_image(rootfs, image)
    finally:
        shutil.rmtree(rootfs, ignore_errors=True)
    return image


@contextmanager
def uv_image() -> Iterator[str]:
    """A local image holding the host's uv as /uv, standing in for ghcr.io/astral-sh/uv.

    One per build: buildah 1.28 with --layers=false deletes an image that a stage uses
    as it is (``FROM ${UV_IMAGE} AS uv``) when the build ends.
    """
    uv = tool("uv")
    version = run([uv, "--version"], cwd=REPO_ROOT).stdout.split()[1]
    image = f"localhost/template-test-uv:{version}-{os.getpid()}"
    buildah = tool("buildah")
    container = run([buildah, "from", "scratch"], cwd=REPO_ROOT).stdout.strip()
    try:
        run([buildah, "copy", container, uv, "/uv"], cwd=REPO_ROOT)
        run([buildah, "commit", "--quiet", container, image], cwd=REPO_ROOT)
    finally:
        run([buildah, "rm", container], cwd=REPO_ROOT)
    try:
        yield image
    finally:
        run([tool("podman"), "rmi", "--ignore", image], cwd=REPO_ROOT)


def podman_build(project: Path, tag: str, uv: str, python_version: str) -> list[str]:
    """The build command of docs/containers.md, section 3, for ``project``."""
    return [
        tool("podman"),
        "build",
        "--isolation=chroot",
        "--network=host",
        # HEALTHCHECK exists in Docker's image format only (OCI drops it).
        "--format=docker",
        # No layer cache: every run builds the Dockerfile as it is, leaving no dangling images.
        "--layers=false",
        "-v",
        "/etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro",
        # uv in the build trusts that bundle, i.e. reaches PyPI the way the host does.
        "--build-arg",
        "UV_SYSTEM_CERTS=true",
        "--build-arg",
        f"PYTHON_IMAGE={base_image(python_version)}",
        "--build-arg",
        f"UV_IMAGE={uv}",
        "-t",
        tag,
        str(project),
    ]


@pytest.fixture(scope="module")
def image(cookies_session: Any) -> Iterator[Image]:
    """The default bake, built as generated; removed afterwards (the base image stays)."""
    project = bake(cookies_session)
    python_version = OPTIONS["python_version"][0]
    tag = f"localhost/template-test-{project.name}:{os.getpid()}"
    with uv_image() as uv:
        command = podman_build(project, tag, uv, python_version)
        started = time.monotonic()
        run(command, cwd=project, timeout=900)
        build_seconds = time.monotonic() - started
    built = Image(tag=tag, project=project, inspect=podman_inspect(tag))
    try:
        base_size = podman_inspect(BASE_IMAGE.format(version=python_version))["Size"]
        print(
            f"\nimage {tag}: built in {build_seconds:.1f} s, "
            f"{(built.inspect['Size'] - base_size) / 1e6:.1f} MB above its base image"
        )
        yield built
    finally:
        run([tool("podman"), "rmi", tag], cwd=REPO_ROOT)


@pytest.fixture(scope="module")
def container(image: Image) -> Iterator[str]:
    """A working container of the image, for ``buildah run``."""
    buildah = tool("buildah")
    name = run([buildah, "from", image.tag], cwd=REPO_ROOT).stdout.strip()
    yield name
    run([buildah, "rm", name], cwd=REPO_ROOT)


def in_container(
    image: Image, container: str, command: list[str], **env: str
) -> subprocess.CompletedProcess[str]:
    """Run ``command`` in ``container`` as the image would: its user, directory, environment."""
    return subprocess.run(
        buildah_run(image, container, command, **env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def buildah_run(image: Image, container: str, command: list[str], **env: str) -> list[str]:
    """docs/containers.md, section 4: chroot isolation, the host's network."""
    assert not image.config.get("Entrypoint"), "the image's ENTRYPOINT would wrap commands"
    arguments = [tool("buildah"), "run", "--isolation", "chroot", "--network", "host"]
    # An image without USER runs as root, as docker would run it.
    user = image.config.get("User") or "0"
    arguments += ["--user", user, "--workingdir", image.config.get("WorkingDir") or "/"]
    for key, value in env.items():
        arguments += ["--env", f"{key}={value}"]
    return [*arguments, container, "--", *command]


@pytest.fixture(scope="module")
def database(postgres: PostgresServer) -> Iterator[str]:
    """A fresh database for the image's service, dropped afterwards; yields its asyncpg URL."""
    name = postgres.create_database()
    try:
        yield postgres.async_url(name)
    finally:
        postgres.drop_database(name)


@dataclass(frozen=True)
class Server:
    """The image's CMD serving on ``port``; ``pids`` are the uvicorn processes it started."""

    port: int
    pids: list[int]
    log: Path


def wait_until_ready(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the image's CMD exited {process.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    pytest.fail(f"/readyz did not answer 200 within 60 s:\n{log.read_text()}")


def stop(process: subprocess.Popen[bytes], pids: list[int]) -> None:
    """Stop the service as ``docker stop`` does: SIGTERM to uvicorn (killing ``buildah run``
    instead would SIGKILL uvicorn's parent and orphan its workers)."""
    if not pids:
        os.killpg(process.pid, signal.SIGKILL)
    for pid in pids[:1]:
        os.kill(pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    for pid in pids:
        if Path(f"/proc/{pid}").exists():
            os.kill(pid, signal.SIGKILL)


def compose_environment(image: Image, service: str, database_url: str) -> dict[str, str]:
    """The environment compose gives ``service``, with a database of this machine."""
    env = {**compose_services(image.project)[service]["environment"], "DATABASE_URL": database_url}
    assert not [value for value in env.values() if "${" in value], env
    return env


@contextmanager
def serve(image: Image, container: str, log: Path, **env: str) -> Iterator[Server]:
    """The image's own CMD, environment and user, on a free port of the host's network."""
    port = free_port()
    command = buildah_run(image, container, image.config["Cmd"], **env, UVICORN_PORT=str(port))
    with log.open("wb") as output:
        process = subprocess.Popen(
            command, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
    pids: list[int] = []
    try:
        wait_until_ready(port, process, log)
        workers = int(image.env.get("WEB_CONCURRENCY", "1"))
        deadline = time.monotonic() + 30
        while len(pids) < workers + (workers > 1) and time.monotonic() < deadline:
            time.sleep(0.2)
            pids = [int(pid) for pid in SERVER_PROCESS.findall(log.read_text())]
        yield Server(port=port, pids=pids, log=log)
    finally:
        stop(process, pids)
        assert [pid for pid in pids if Path(f"/proc/{pid}").exists()] == []


@pytest.fixture(scope="module")
def server(
    image: Image, container: str, database: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """The image serving as compose's app service would, on this machine's database."""
    log = tmp_path_factory.mktemp("server") / "uvicorn.log"
    with serve(image, container, log, **compose_environment(image, "app", database)) as running:
        yield running


@pytest.mark.slow
@IMAGE_WORKER
def test_image_holds_compiled_bytecode_and_neither_uv_nor_dev_tools(
    image: Image, container: str
) -> None:
    probe = (
        "import importlib.util, json, pathlib, shutil, sysconfig;"
        "site = pathlib.Path(sysconfig.get_paths()['purelib']);"
        "print(json.dumps({"
        "'uv': shutil.which('uv'),"
        "'dev': [m for m in ('pytest', 'ruff', 'mypy', 'coverage', 'httpx')"
        " if importlib.util.find_spec(m)],"
        "'pyc': len(list((site / 'fastapi').rglob('*.pyc'))),"
        f"'app': importlib.util.find_spec('{image.package}.main').origin}}))"
    )
    result = in_container(image, container, ["python", "-c", probe])
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert found["uv"] is None
    assert found["dev"] == []
    assert found["pyc"] > 0
    # Installed into the virtual environment, not run from a copy of the sources.
    assert f"/site-packages/{image.package}/" in found["app"]


@pytest.mark.slow
@IMAGE_WORKER
def test_compose_migrate_command_migrates_a_fresh_database_in_the_image(
    image: Image, container: str, database: str
) -> None:
    command = compose_services(image.project)["migrate"]["command"]
    result = in_container(image, container, command, DATABASE_URL=database)
    assert result.returncode == 0, result.stderr
    versions = sorted((image.project / "migrations" / "versions").glob("*.py"))
    head = versions[-1].name.split("-", 1)[1].split("_", 1)[0]  # files are named by date
    assert asyncpg_fetch(database, "SELECT version_num FROM alembic_version") == [head]


def asyncpg_fetch(url: str, query: str) -> list[Any]:
    async def fetch() -> list[Any]:
        connection = await asyncpg.connect(url.replace("postgresql+asyncpg", "postgresql"))
        try:
            return [row[0] for row in await connection.fetch(query)]
        finally:
            await connection.close()

    return asyncio.run(fetch())


@pytest.mark.slow
@IMAGE_WORKER
def test_image_cmd_serves_on_the_port_it_is_given_as_a_non_root_user(
    image: Image, server: Server
) -> None:
    assert httpx.get(f"http://127.0.0.1:{server.port}/livez", timeout=5).status_code == 200
    # uvicorn's parent process plus WEB_CONCURRENCY workers, each serving, none of them root.
    workers = int(image.env.get("WEB_CONCURRENCY", "1"))
    assert len(server.pids) == workers + (workers > 1), server.log.read_text()
    user = image.config.get("User") or "0"
    # A numeric user: Kubernetes' runAsNonRoot can verify it without /etc/passwd.
    assert re.fullmatch(r"\d+(:\d+)?", user), user
    uid = int(user.split(":")[0])
    for pid in server.pids:
        status = Path(f"/proc/{pid}/status").read_text()
        uids = re.search(r"^Uid:\s+(\d+)\s+(\d+)", status, re.M)
        assert uids is not None
        assert {int(uids.group(1)), int(uids.group(2))} == {uid}
    assert uid != 0


@pytest.mark.slow
@IMAGE_WORKER
def test_image_healthcheck_passes_while_serving_and_fails_without_a_server(
    image: Image, container: str, server: Server
) -> None:
    test = image.inspect["Healthcheck"]["Test"]
    command = test[1:] if test[0] == "CMD" else ["/bin/sh", "-c", test[1]]
    serving = in_container(image, container, command, UVICORN_PORT=str(server.port))
    assert serving.returncode == 0, serving.stderr
    nothing = in_container(image, container, command, UVICORN_PORT=str(free_port()))
    assert nothing.returncode != 0


@pytest.mark.slow
@IMAGE_WORKER
def test_compose_app_healthcheck_passes_in_the_image_when_the_database_answers(
    image: Image, container: str, server: Server
) -> None:
    test = compose_services(image.project)["app"]["healthcheck"]["test"]
    assert test[0] == "CMD"
    result = in_container(image, container, test[1:], UVICORN_PORT=str(server.port))
    assert result.returncode == 0, result.stderr


@pytest.mark.slow
@IMAGE_WORKER
def test_image_build_without_uv_lock_fails_and_asks_for_one(cookies_session: Any) -> None:
    project = bake(cookies_session, project_name="No Lock")
    (project / "uv.lock").unlink()  # every bake has one: as if a team deleted it
    tag = f"localhost/template-test-no-lock:{os.getpid()}"
    with uv_image() as uv:
        command = podman_build(project, tag, uv, OPTIONS["python_version"][0])
        result = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    if result.returncode == 0:
        run([tool("podman"), "rmi", tag], cwd=REPO_ROOT)
    assert result.returncode != 0
    assert "uv lock" in result.stdout + result.stderr


async def readiness_statuses(port: int, requests: int, concurrency: int) -> Counter[int]:
    """The status codes of ``requests`` GET /readyz, ``concurrency`` at a time."""
    limit = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:

        async def one() -> int:
            async with limit:
                return (await client.get("/readyz")).status_code

        return Counter(await asyncio.gather(*(one() for _ in range(requests))))


@pytest.mark.slow
@IMAGE_WORKER
def test_image_serves_through_pgbouncer_with_the_compose_profile_settings(
    image: Image,
    container: str,
    database: str,
    pgbouncer: PgBouncer,
    tmp_path: Path,
) -> None:
    url = pgbouncer.url(database.rsplit("/", 1)[1])
    env = compose_environment(image, "app-pgbouncer", url)
    with serve(image, container, tmp_path / "uvicorn.log", **env) as running:
        statuses = asyncio.run(readiness_statuses(running.port, requests=300, concurrency=30))
    assert statuses == Counter({200: 300}), running.log.read_text()[-3000:]
