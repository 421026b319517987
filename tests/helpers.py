"""Helpers of the template's tests: commands, throwaway PostgreSQL databases, PgBouncer."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any, NoReturn

import asyncpg
import pytest
from sqlalchemy.engine import URL

from tests.python_root import ROOTS, in_root

REPO_ROOT = Path(__file__).resolve().parents[1]
# The Python running these tests, as a ``python_version`` answer: what a bake must ask for
# when a test installs or runs it with this interpreter (the default, 3.14, is tested with a
# real 3.14 by tests/test_bake.py and the tests that use tests/python_root.py).
HOST_PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"


def version_key(version: str) -> tuple[int, ...]:
    """``"3.11"`` as ``(3, 11)``: Python versions in order (as strings, 3.9 > 3.11)."""
    return tuple(map(int, version.split(".")))


# The template's questions and their choices (the first is the --no-input default).
OPTIONS: dict[str, Any] = json.loads((REPO_ROOT / "cookiecutter.json").read_text())
OLDEST_PYTHON = min(OPTIONS["python_version"], key=version_key)
NEWEST_PYTHON = max(OPTIONS["python_version"], key=version_key)


DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"


def skip_or_fail(reason: str) -> NoReturn:
    """Skip a test whose tool or server is missing; fail it where REQUIRE_POSTGRES says that
    everything must be here (CI)."""
    if os.environ.get("REQUIRE_POSTGRES"):
        pytest.fail(f"{reason}; REQUIRE_POSTGRES is set", pytrace=False)
    pytest.skip(reason)


def tool(name: str) -> str:
    """The path of a command-line tool, the dev group's (beside Python) first."""
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if found is None:
        skip_or_fail(f"{name} is not installed")
    return found


def run(
    args: list[str] | str,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    timeout: float = 600,
) -> subprocess.CompletedProcess[str]:
    """Run a command, failing the test with its output if it does not exit 0."""
    result = subprocess.run(
        args,
        cwd=cwd,
        env=dict(env) if env is not None else None,
        shell=isinstance(args, str),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(
            f"{args!r} exited {result.returncode}\n--- stdout\n{result.stdout[-6000:]}"
            f"\n--- stderr\n{result.stderr[-6000:]}",
            pytrace=False,
        )
    return result


def find_interpreter(version: str) -> str:
    """A working ``python<version>``: on PATH, or installed by pyenv but not on its PATH."""
    found = host_interpreter(version)
    if found is None:
        pytest.fail(f"python{version} is not installed; the template supports it", pytrace=False)
    return found


@cache  # the machine's Pythons do not change while the tests run
def host_interpreter(version: str) -> str | None:
    """``find_interpreter``'s answer, or None where this machine lacks that Python."""
    candidates = [shutil.which(f"python{version}")]
    pyenv = shutil.which("pyenv")
    if pyenv is not None:
        root = subprocess.run([pyenv, "root"], capture_output=True, text=True, check=False)
        versions = Path(root.stdout.strip()) / "versions"
        candidates += sorted(map(str, versions.glob(f"{version}.*/bin/python{version}")))
    for candidate in filter(None, candidates):
        probe = subprocess.run([candidate, "--version"], capture_output=True, check=False)
        if probe.returncode == 0:
            return candidate
    return None


def in_a_root(version: str) -> bool:
    """Whether Python ``version`` runs in its Debian root (tests/python_root.py): this
    machine lacks it, and a root provides it."""
    return host_interpreter(version) is None and version in ROOTS


def uv_python(version: str) -> list[str]:
    """uv's ``--python`` for Python ``version``: the host's own interpreter where it has one
    (GitHub's runners have them all); none in a Debian root, whose uv finds the root's."""
    return [] if in_a_root(version) else ["--python", find_interpreter(version)]


def on_python(version: str, project: Path, command: list[str], env: Mapping[str, str]) -> list[str]:
    """``command``, to run in ``project`` on Python ``version``: as it is where this machine
    has that Python, else in the Debian root that has it."""
    if in_a_root(version):
        return in_root(version, project, command, env, tool("uv"))
    return command


class HostCookies:
    """pytest-cookies' bakery, answering ``python_version`` with the Python that runs these
    tests (unless a test answers it): for bakes that a test installs or runs with this
    interpreter, rather than with the Python the default asks for."""

    def __init__(self, cookies: Any) -> None:
        self.cookies = cookies

    def bake(self, extra_context: dict[str, str] | None = None) -> Any:
        return self.cookies.bake(
            extra_context={"python_version": HOST_PYTHON, **(extra_context or {})}
        )


def uv_env(**overrides: str) -> dict[str, str]:
    """A clean environment with uv (from the template's own dev group) on PATH.

    uv may only use the Pythons installed here, never download one.
    """
    tools = Path(sys.executable).parent
    assert shutil.which("uvx", path=str(tools)), "uv is not installed with the dev group"
    path = f"{tools}{os.pathsep}{os.environ.get('PATH', '')}"
    return clean_env(PATH=path, UV_PYTHON_DOWNLOADS="never", **overrides)


def clean_env(**overrides: str) -> dict[str, str]:
    """The environment for a baked project's commands: no settings leak in from outside."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DATABASE_", "TEST_DATABASE_", "PYTEST_", "COV_", "VIRTUAL_ENV"))
    }
    env.update(overrides)
    return env


async def _execute(server: URL, statement: str) -> None:
    connection = await asyncpg.connect(
        host=server.host,
        port=server.port or 5432,
        user=server.username,
        password=server.password,
        database=server.database,
        timeout=5,
    )
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


class PostgresServer:
    """The PostgreSQL server the tests may use, and a way to make throwaway databases."""

    def __init__(self, url: URL) -> None:
        self.url = url

    def execute(self, statement: str) -> None:
        """Run one statement in autocommit mode on the server's maintenance database."""
        asyncio.run(_execute(self.url, statement))

    def create_database(self, name: str | None = None) -> str:
        """Create a database (uniquely named unless ``name`` is given); return its name."""
        name = name or f"tpl_{uuid.uuid4().hex[:16]}"
        self.execute(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def async_url(self, database: str | None = None) -> str:
        """An asyncpg URL for ``database`` (default: the maintenance database)."""
        url = self.url.set(drivername="postgresql+asyncpg")
        if database is not None:
            url = url.set(database=database)
        return url.render_as_string(hide_password=False)


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_port(port: int, timeout: float = 30) -> None:
    """Wait until something accepts connections on ``port``; fail the test otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    pytest.fail(f"nothing listened on port {port} within {timeout} s", pytrace=False)


def project_package(project: Path) -> str:
    """The import name of a bake's package (its one folder under src/)."""
    (package,) = [path.name for path in (project / "src").iterdir() if path.is_dir()]
    return package


# How a bake's service is served (its container's CMD): its dependencies bring neither uvloop
# nor httptools. The suite's environment has both (for benchmarks/run.py's B8), and uvicorn
# would pick them unless told otherwise.
UVICORN_AS_SHIPPED = ("--loop", "asyncio", "--http", "h11")


@contextmanager
def serve(
    project: Path, database_url: str, log: Path, workers: int = 1, **settings: str
) -> Iterator[str]:
    """A bake's service under uvicorn, its output in ``log``; yields its base URL."""
    port = free_port()
    env = clean_env(DATABASE_URL=database_url, **settings)
    command = [sys.executable, "-m", "uvicorn", f"{project_package(project)}.main:app"]
    command += ["--app-dir", "src", "--port", str(port), "--workers", str(workers)]
    command += UVICORN_AS_SHIPPED
    with log.open("wb") as output:
        server = subprocess.Popen(
            [*command, "--log-level", "warning"],
            cwd=project,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for_port(port)
            yield f"http://127.0.0.1:{port}"
        finally:
            server.terminate()
            server.wait(timeout=30)


PGBOUNCER_INI = """\
[databases]
* = host={host} port={port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {listen_port}
unix_socket_dir =
auth_type = trust
auth_file = {folder}/userlist.txt
; Transaction pooling: each transaction may run on another server connection.
pool_mode = transaction
default_pool_size = 2
max_client_conn = 500
logfile = {folder}/pgbouncer.log
pidfile = {folder}/pgbouncer.pid
ignore_startup_parameters = extra_float_digits
"""


def find_pgbouncer() -> str | None:
    """PgBouncer's executable: on PATH, or in /usr/sbin, where Debian puts it (off most PATHs)."""
    return shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin")


class PgBouncer:
    """A PgBouncer in transaction pooling mode on a free loopback port, in front of ``server``."""

    def __init__(self, server: URL, folder: Path, binary: str) -> None:
        self.server = server
        self.binary = binary
        self.folder = folder
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "userlist.txt").write_text(f'"{self.server.username}" ""\n')
        ini = self.folder / "pgbouncer.ini"
        ini.write_text(
            PGBOUNCER_INI.format(
                host=self.server.host,
                port=self.server.port or 5432,
                listen_port=self.port,
                folder=self.folder,
            )
        )
        command = [self.binary, str(ini)]
        if os.geteuid() == 0:
            # PgBouncer refuses to run as root; run it as the postgres system user.
            self.folder.chmod(0o777)
            shutil.chown(self.folder, "postgres")
            command = ["runuser", "-u", "postgres", "--", *command]
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_for_port(self.port)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)

    def url(self, database: str) -> str:
        """An asyncpg URL to ``database`` through this PgBouncer."""
        url = self.server.set(
            drivername="postgresql+asyncpg", host="127.0.0.1", port=self.port, database=database
        )
        return url.render_as_string(hide_password=False)


def copy_tracked_files(destination: Path) -> None:
    """Copy the files git tracks in this repository, as they are on disk, to ``destination``."""
    listing = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True, check=True
    )
    for name in listing.stdout.decode().split("\0"):
        source = REPO_ROOT / name
        if name and source.is_file():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


POSTGRES_BIN = Path(os.environ.get("TEMPLATE_POSTGRES_BIN", "/usr/lib/postgresql/15/bin"))
# Settings of the throwaway pair: streaming replication, loopback only, no Unix socket (so
# nothing lands in /var/run/postgresql), and no fsync (the data lives for one test run).
REPLICATION_CONF = """
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = ''
wal_level = replica
max_wal_senders = 4
hot_standby = on
fsync = off
full_page_writes = off
synchronous_commit = off
max_connections = 60
shared_buffers = 16MB
"""
REPLICATION_HBA = """
host replication all 127.0.0.1/32 trust
host all all 127.0.0.1/32 trust
"""


class ReplicationError(RuntimeError):
    """The primary and replica pair could not be started."""


class PrimaryWithReplica:
    """A PostgreSQL primary and one streaming replica in a temporary folder, on free ports.

    Both are owned by the ``postgres`` system user when run as root (PostgreSQL refuses root)
    and share nothing with the machine's own server: their own data folders, ports, loopback
    TCP only. ``stop()`` stops both and removes the folder. Errors are ``ReplicationError``
    (not test failures), so the benchmarks can use the class too.
    """

    def __init__(self, bin_dir: Path = POSTGRES_BIN) -> None:
        self.bin_dir = bin_dir
        self.folder: Path | None = None
        self.primary_port = free_port()
        self.replica_port = free_port()

    @property
    def primary_data(self) -> Path:
        assert self.folder is not None, "start() first"
        return self.folder / "primary"

    @property
    def replica_data(self) -> Path:
        assert self.folder is not None, "start() first"
        return self.folder / "replica"

    def _run(self, tool: str, *args: str, timeout: float = 60) -> None:
        command = [str(self.bin_dir / tool), *args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, check=False
        )
        if result.returncode != 0:
            raise ReplicationError(
                f"{tool} exited {result.returncode}: {result.stdout[-2000:]}{result.stderr[-2000:]}"
            )

    def start(self) -> None:
        """Create, start and connect both servers; return once the replica streams."""
        if not (self.bin_dir / "initdb").exists():
            raise ReplicationError(f"PostgreSQL's server binaries are not in {self.bin_dir}")
        self.folder = Path(tempfile.mkdtemp(prefix="pg-replication-"))
        try:
            if os.geteuid() == 0:
                shutil.chown(self.folder, "postgres", "postgres")
            self._run(
                "initdb",
                "--pgdata",
                str(self.primary_data),
                "--username",
                "postgres",
                "--auth",
                "trust",
                "--encoding",
                "UTF8",
                "--locale",
                "C",
                "--no-sync",
                "--no-instructions",
            )
            with (self.primary_data / "postgresql.conf").open("a") as conf:
                conf.write(REPLICATION_CONF.format(port=self.primary_port))
            with (self.primary_data / "pg_hba.conf").open("a") as hba:
                hba.write(REPLICATION_HBA)
            self._pg_ctl("start", self.primary_data)
            self._run(
                "pg_basebackup",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.primary_port),
                "--username",
                "postgres",
                "--pgdata",
                str(self.replica_data),
                "--write-recovery-conf",  # -R: standby.signal and primary_conninfo
                "--wal-method",
                "stream",
                "--checkpoint",
                "fast",
                "--no-sync",
            )
            with (self.replica_data / "postgresql.conf").open("a") as conf:
                conf.write(f"port = {self.replica_port}\n")
            self.start_replica()
        except BaseException:
            self.stop()
            raise

    def _pg_ctl(self, action: str, data: Path) -> None:
        log = ["--log", str(data.parent / f"{data.name}.log")] if action == "start" else []
        # -w: return once the server accepts connections (or has stopped).
        self._run("pg_ctl", action, "-w", "-t", "60", "-m", "fast", "-D", str(data), *log)

    def stop_replica(self) -> None:
        """Stop the replica (fast shutdown: its open connections are closed at once)."""
        self._pg_ctl("stop", self.replica_data)

    def start_replica(self, timeout: float = 30) -> None:
        """Start the replica; return once it accepts connections and streams from the primary."""
        self._pg_ctl("start", self.replica_data)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            streaming = self.fetchval(
                "primary", "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'"
            )
            if streaming:
                return
            time.sleep(0.05)
        raise ReplicationError(f"the replica did not stream within {timeout} s")

    def stop(self) -> None:
        """Stop both servers (those that run) and remove the folder."""
        if self.folder is None:
            return
        for data in (self.replica_data, self.primary_data):
            if (data / "postmaster.pid").exists():
                self._run("pg_ctl", "stop", "-w", "-m", "immediate", "-D", str(data))
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder = None

    def port(self, server: str) -> int:
        return {"primary": self.primary_port, "replica": self.replica_port}[server]

    def url(self, server: str, database: str = "postgres") -> str:
        """An asyncpg URL of ``database`` on the ``server`` ("primary" or "replica")."""
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port(server)}/{database}"

    def fetchval(self, server: str, statement: str, database: str = "postgres") -> object:
        """The first value of ``statement``, run in autocommit mode on ``server``."""

        async def fetch() -> object:
            connection = await asyncpg.connect(
                host="127.0.0.1",
                port=self.port(server),
                user="postgres",
                database=database,
                timeout=5,
            )
            try:
                return await connection.fetchval(statement)
            finally:
                await connection.close()

        return asyncio.run(fetch())


def replicated_bake(
    cookies: HostCookies, servers: PrimaryWithReplica, url: str
) -> tuple[Path, str]:
    """A PostgreSQL bake and its package name, migrated at ``url``: the database "service"
    made on ``servers``' primary (its replica replays the schema)."""
    result = cookies.bake(extra_context={"database": "postgresql"})
    assert result.exit_code == 0, result.exception
    path = Path(result.project_path)
    (package,) = [child.name for child in (path / "src").iterdir() if child.is_dir()]
    servers.fetchval("primary", "CREATE DATABASE service")
    run(
        [sys.executable, "-m", "alembic", "upgrade", "head"],
        cwd=path,
        env=clean_env(DATABASE_URL=url),
    )
    return path, package
