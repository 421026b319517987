"""Benchmark a generated service against baselines measured side by side in the same run.

    .venv/bin/python benchmarks/run.py            # about 6 minutes; writes benchmarks/RESULTS.md
    .venv/bin/python benchmarks/run.py --quick    # a smoke run with short durations
    .venv/bin/python benchmarks/run.py --only B2  # some of them; prints, writes nothing

Bakes the template (default options, PostgreSQL), migrates a fresh PostgreSQL database and runs
B1-B9 of the README: test-harness cost, HTTP read path, event loop under slow queries, start-up,
streaming appends, and reads from a streaming replica. Every number comes with the baseline it
is compared to, measured in the same run: the machines are shared and noisy, so ratios mean more
than absolute times. Needs wrk (apt-get install wrk) and the PostgreSQL server of
TEMPLATE_POSTGRES_URL; B6 starts a primary and a replica of its own from PostgreSQL's server
binaries (tests/helpers.py ``PrimaryWithReplica``). B9 prices traces and metrics.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import platform
import re
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the template's tests/
from tests.helpers import (
    UVICORN_AS_SHIPPED,
    PrimaryWithReplica,
    host_interpreter,
    on_python,
    uv_env,
)

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
# Scratch space: bakes, databases' files, logs (BENCH_WORK lets two runs keep apart).
WORK = Path(os.environ.get("BENCH_WORK", HERE / ".work"))
SERVER_URL = make_url(
    os.environ.get("TEMPLATE_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
)
PYTHON = sys.executable
# The bakes run with PYTHON, so they are made for it (the default python_version may be newer).
PYTHON_VERSION = f"{sys.version_info.major}.{sys.version_info.minor}"


@dataclass
class Row:
    """One line of the results table."""

    bench: str
    case: str
    value: str
    baseline: str = ""
    ratio: str = ""
    target: str = ""
    met: str = ""


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)

    def add(self, row: Row) -> None:
        self.rows.append(row)
        print(f"  {row.bench} {row.case}: {row.value} {row.ratio} {row.met}".rstrip(), flush=True)

    def markdown(self) -> str:
        lines = [
            "| bench | case | measured | baseline (same run) | ratio | target | met |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in self.rows:
            cells = (r.bench, r.case, r.value, r.baseline, r.ratio, r.target, r.met)
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)


def verdict(ok: bool) -> str:
    return "yes" if ok else "**no**"


def median(values: list[float]) -> float:
    return statistics.median(values)


def run(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=900, check=False
    )
    if result.returncode != 0:
        raise SystemExit(f"{args} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result.stdout + result.stderr


def clean_env(**overrides: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DATABASE_", "TEST_DATABASE_", "PYTEST_", "COV_"))
    }
    env.update(overrides)
    return env


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def _execute(statement: str, database: str | None = None) -> None:
    url = SERVER_URL.set(database=database) if database else SERVER_URL
    connection = await asyncpg.connect(
        host=url.host,
        port=url.port or 5432,
        user=url.username,
        password=url.password,
        database=url.database,
    )
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


def sql(statement: str, database: str | None = None) -> None:
    asyncio.run(_execute(statement, database))


def async_url(database: str) -> str:
    url = SERVER_URL.set(drivername="postgresql+asyncpg", database=database)
    return url.render_as_string(hide_password=False)


# --- the project under test ---------------------------------------------------------------


@dataclass
class Project:
    path: Path
    package: str
    database: str  # the PostgreSQL database the benchmarks use

    @property
    def pg_url(self) -> str:
        return async_url(self.database)


def bake_times(repeats: int) -> list[float]:
    """Wall time of an in-process ``cookiecutter --no-input`` bake, ``repeats`` times."""
    from cookiecutter.main import cookiecutter

    times = []
    for n in range(repeats):
        target = WORK / f"bake-{n}"
        shutil.rmtree(target, ignore_errors=True)
        started = time.perf_counter()
        cookiecutter(str(REPO_ROOT), no_input=True, output_dir=str(target))
        times.append(time.perf_counter() - started)
        shutil.rmtree(target)
    return times


def prepare_project() -> Project:
    from cookiecutter.main import cookiecutter

    target = WORK / "project"
    shutil.rmtree(target, ignore_errors=True)
    path = Path(
        cookiecutter(
            str(REPO_ROOT),
            no_input=True,
            output_dir=str(target),
            extra_context={
                "database": "postgresql",
                "project_name": "Bench Service",
                "python_version": PYTHON_VERSION,
            },
        )
    )
    database = f"bench_{uuid.uuid4().hex[:12]}"
    sql(f'CREATE DATABASE "{database}"')
    project = Project(path=path, package="bench_service", database=database)
    run(
        [PYTHON, "-m", "alembic", "upgrade", "head"],
        cwd=path,
        env=clean_env(DATABASE_URL=project.pg_url),
    )
    return project


# --- B1: test-harness cost ------------------------------------------------------------------

HARNESS_TESTS = """
import pytest
from sqlalchemy import select

from tests.models import Note


@pytest.mark.parametrize("n", range({count}))
async def test_insert_and_read(session, n):
    title = f"note {{n}}"
    session.add(Note(title=title))
    await session.flush()
    assert await session.scalar(select(Note.title).where(Note.title == title)) == title
"""

FRESH_ENGINE_TESTS = """
import pytest
from sqlalchemy import select

from {package}.core.database import Base
from {package}.core.database.engine import engine_from_settings
from tests.harness import settings_for
from tests.models import Note


@pytest.mark.parametrize("n", range({count}))
async def test_insert_and_read(database_url, n):
    # The common pattern: a fresh engine and schema per test.
    engine = engine_from_settings(settings_for(database_url))
    async with engine.begin() as connection:
        await connection.run_sync(Base.metadata.create_all)
    try:
        async with engine.connect() as connection:
            from sqlalchemy.ext.asyncio import async_sessionmaker
            async with async_sessionmaker(connection, expire_on_commit=False)() as session:
                session.add(Note(title=f"note {{n}}"))
                await session.flush()
                assert await session.scalar(select(Note.title)) == f"note {{n}}"
    finally:
        async with engine.begin() as connection:
            await connection.run_sync(Base.metadata.drop_all)
        await engine.dispose()
"""

EMPTY_TESTS = """
import pytest


@pytest.mark.parametrize("n", range({count}))
async def test_nothing(engine, n):
    # The floor: the run's one-time set-up (database, engine, schema) and nothing per test.
    pass
"""


TIMING_CONFTEST = """
import json, os, time

import pytest

TIMES = []


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    started = time.perf_counter()
    yield
    TIMES.append(time.perf_counter() - started)


def pytest_sessionfinish(session):
    with open(os.environ["BENCH_TIMES"], "w") as output:
        json.dump(TIMES, output)
"""


def per_test_seconds(project: Project, test_file: str, env: dict[str, str]) -> float:
    """Mean wall time of one test (set-up, call, tear-down, report), timed inside pytest.

    Timing inside pytest leaves out interpreter start-up, imports and collection, which vary
    by tenths of a second between runs: divided by 200 tests, as much as the cost measured.
    The first test is left out too: it carries the run's one-time set-up (database, engine,
    schema), which session-scoped fixtures pay once whatever the number of tests.
    """
    times_file = WORK / "times.json"
    run(
        [PYTHON, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n0", test_file],
        cwd=project.path,
        env={**env, "BENCH_TIMES": str(times_file)},
    )
    times = json.loads(times_file.read_text())[1:]
    return sum(times) / len(times)


def bench_harness(project: Project, report: Report, repeats: int, count: int) -> None:
    folder = project.path / "tests" / "bench"
    folder.mkdir(exist_ok=True)
    (folder / "__init__.py").write_text("")
    (folder / "conftest.py").write_text(TIMING_CONFTEST)
    suites = {
        "empty": EMPTY_TESTS.format(count=count),
        "harness": HARNESS_TESTS.format(count=count),
        "fresh": FRESH_ENGINE_TESTS.format(count=count, package=project.package),
    }
    for name, source in suites.items():
        (folder / f"test_{name}.py").write_text(source)
    backends = {
        "SQLite (memory)": clean_env(),
        "PostgreSQL": clean_env(TEST_DATABASE_URL=SERVER_URL.render_as_string(hide_password=False)),
    }
    targets = {"SQLite (memory)": 3.0, "PostgreSQL": 5.0}
    for backend, env in backends.items():
        seconds: dict[str, list[float]] = {name: [] for name in suites}
        for _ in range(repeats):
            for name in suites:
                test_file = f"tests/bench/test_{name}.py"
                seconds[name].append(per_test_seconds(project, test_file, env))
        floor = median(seconds["empty"])
        per_test = {name: (median(seconds[name]) - floor) * 1000 for name in ("harness", "fresh")}
        report.add(
            Row(
                "B1",
                f"{count} DB tests, {backend}, ms/test above the empty-suite floor",
                f"{per_test['harness']:.2f} ms",
                f"{per_test['fresh']:.2f} ms (fresh engine + create_all)",
                f"{per_test['fresh'] / per_test['harness']:.1f}x faster",
                f"<= {targets[backend]:g} ms",
                verdict(per_test["harness"] <= targets[backend]),
            )
        )
    shutil.rmtree(folder)


def bench_suite(report: Report, repeats: int) -> None:
    """The default bake's whole suite on SQLite, as the README runs it and without coverage:
    on the default Python, in the bake's locked environment; where this machine lacks that
    Python, in the Debian root the template's suite runs such bakes in."""
    from cookiecutter.main import cookiecutter

    target = WORK / "suite"
    shutil.rmtree(target, ignore_errors=True)
    project = Path(cookiecutter(str(REPO_ROOT), no_input=True, output_dir=str(target)))
    python = (project / ".python-version").read_text().strip()
    interpreter = host_interpreter(python)
    env = uv_env() if interpreter is None else uv_env(UV_PYTHON=interpreter)

    def suite_seconds(*args: str) -> float:
        pytest = ["uv", "run", "--no-sync", "pytest", "-q", "-p", "no:cacheprovider", *args]
        command = on_python(python, project, pytest, env)
        started = time.perf_counter()
        run(command, cwd=project, env=env)
        return time.perf_counter() - started

    print(f"  B1: the default bake's suite, on Python {python}", flush=True)
    run(on_python(python, project, ["uv", "sync", "--locked", "-q"], env), cwd=project, env=env)
    runs = {"pytest --cov": ["--cov"], "pytest": [], "pytest --cov -n0": ["--cov", "-n0"]}
    samples: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):  # interleaved, so that a slower spell of the machine hits all
        for name, args in runs.items():
            samples[name].append(suite_seconds(*args))
    seconds = {name: median(values) for name, values in samples.items()}
    serial = seconds["pytest --cov -n0"]
    for name in ("pytest --cov", "pytest"):
        report.add(
            Row(
                "B1",
                f"default bake's whole suite on SQLite, wall time: `{name}` (parallel)",
                f"{seconds[name]:.1f} s",
                f"{serial:.1f} s (`pytest --cov -n0`, one process)",
                f"{serial / seconds[name]:.1f}x faster",
                "<= 15 s",
                verdict(seconds[name] <= 15),
            )
        )
    shutil.rmtree(target)


# --- servers and load -----------------------------------------------------------------------


@contextmanager
def uvicorn(
    cwd: Path,
    app: str,
    env: dict[str, str],
    app_dir: str = ".",
    workers: int = 1,
    options: tuple[str, ...] = UVICORN_AS_SHIPPED,
    pids: list[int] | None = None,
) -> Iterator[str]:
    """uvicorn serving ``app`` (one worker unless told; ``options`` choose its loop and HTTP);
    yields its base URL once it answers. ``pids`` gets the process id (with one worker,
    the process that serves)."""
    port = free_port()
    log = WORK / f"uvicorn-{port}.log"
    with log.open("wb") as output:
        server = subprocess.Popen(
            [
                PYTHON,
                "-m",
                "uvicorn",
                app,
                "--app-dir",
                app_dir,
                "--port",
                str(port),
                "--log-level",
                "warning",
                "--no-access-log",
                "--workers",
                str(workers),
                *options,
            ],
            cwd=cwd,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{port}"
        if pids is not None:
            pids.append(server.pid)
        try:
            wait_until_up(base, server, log)
            yield base
        finally:
            server.terminate()
            server.wait(timeout=30)


def wait_until_up(base: str, server: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"uvicorn exited:\n{log.read_text()[-3000:]}")
        try:
            httpx.get(base + "/docs", timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.02)
    raise SystemExit(f"uvicorn did not start:\n{log.read_text()[-3000:]}")


def wrk(
    url: str,
    seconds: float,
    connections: int = 50,
    script: Path | None = None,
    env: dict[str, str] | None = None,
) -> tuple[float, int]:
    """Requests per second and non-2xx/3xx answers of one wrk run (one thread)."""
    rate, bad, _, _ = wrk_latency(url, seconds, connections, script, env)
    return rate, bad


def wrk_latency(
    url: str,
    seconds: float,
    connections: int = 50,
    script: Path | None = None,
    env: dict[str, str] | None = None,
) -> tuple[float, int, float, int]:
    """Requests per second, non-2xx/3xx answers, the p99 latency (ms) and the requests
    answered, of one wrk run.

    A run in which no request completed (a busy machine, a short --quick run) is run again,
    twice as long, up to 16 s: a rate of nothing measures the machine, not the service.
    """
    while True:
        args = ["wrk", "-t1", f"-c{connections}", f"-d{round(seconds)}s", "--timeout", "10s"]
        if script is not None:
            args += ["-s", str(script)]
        output = run([*args, "--latency", url], cwd=HERE, env=env)
        rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
        if rate > 0 or seconds >= 16:
            break
        seconds *= 2
    p99 = latency_ms(output, "99%")
    answered = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    return rate, failures(output), p99, answered


# A full run measures only runs in which every request succeeded. A quick run is a smoke test
# of this script, often on a busy machine where the service's time limits can answer 503:
# it says how many failed and goes on.
STOP_ON_FAILURES = True


def failed_requests(what: str, bad: int) -> None:
    """Stop the run if ``bad`` requests of ``what`` failed; in a quick run, say so only."""
    if bad and STOP_ON_FAILURES:
        raise SystemExit(f"{what}: {bad} failed requests")
    if bad:
        print(f"  {what}: {bad} failed requests (a quick run goes on)", flush=True)


def failures(wrk_output: str) -> int:
    """Non-2xx/3xx answers and timeouts of a wrk run."""
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", wrk_output)
    errors = re.search(r"Socket errors:.*?timeout (\d+)", wrk_output)
    return (int(bad.group(1)) if bad else 0) + (int(errors.group(1)) if errors else 0)


def latency_ms(wrk_output: str, row: str) -> float:
    """A latency of wrk's --latency output in ms: a percentile ("99%") or "Max"."""
    pattern = rf"\s{re.escape(row)}\s+([\d.]+)(us|ms|s)\b"
    if row == "Max":  # the fourth column of the Latency line
        pattern = r"Latency\s+\S+\s+\S+\s+([\d.]+)(us|ms|s)\b"
    value, unit = re.search(pattern, wrk_output).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def service_env(project: Project, url: str, **extra: str) -> dict[str, str]:
    return clean_env(
        DATABASE_URL=url,
        BENCH_PACKAGE=project.package,
        PYTHONPATH=os.pathsep.join([str(project.path / "src"), str(HERE)]),
        **extra,
    )


def seed_room(base: str) -> int:
    response = httpx.post(
        base + "/rooms",
        json={"name": f"room {uuid.uuid4().hex}", "capacity": 8, "description": "third floor"},
    )
    response.raise_for_status()
    return int(response.json()["id"])


# --- B2: the HTTP read path -----------------------------------------------------------------


def bench_read_path(project: Project, report: Report, repeats: int, seconds: float) -> None:
    env = service_env(project, project.pg_url)
    raw_env = clean_env(RAW_DSN=SERVER_URL.set(database=project.database).render_as_string(False))
    unlimited_env = {**env, "DATABASE_STATEMENT_TIMEOUT": "0"}
    with (
        uvicorn(HERE, "bench_app:app", env) as generated,
        uvicorn(HERE, "bench_app:app", unlimited_env) as unlimited,
        uvicorn(HERE, "baseline_asyncpg:app", raw_env) as raw,
    ):
        room = seed_room(generated)
        targets = {
            "no database (ceiling)": raw + "/ping",
            "raw asyncpg pool": f"{raw}/rooms/{room}",
            "generated: GET /rooms/{id} (ReadSessionDep, session.get)": f"{generated}/rooms/{room}",
            # The same without statement_timeout and asyncpg's command_timeout: their cost.
            "generated, DATABASE_STATEMENT_TIMEOUT=0 (no time limits)": f"{unlimited}/rooms/{room}",
            "common pattern: pool_pre_ping + transaction": f"{generated}/bench/common/rooms/{room}",
        }
        rates: dict[str, list[float]] = {name: [] for name in targets}
        for url in targets.values():
            wrk(url, 1)  # warm up: connections, caches, prepared statements
        for _ in range(repeats):
            for name, url in targets.items():
                rate, bad = wrk(url, seconds)
                failed_requests(f"B2 {name}", bad)
                rates[name].append(rate)
    med = {name: median(values) for name, values in rates.items()}
    raw_rate = med["raw asyncpg pool"]
    for name, rate in med.items():
        ratio = rate / raw_rate
        row = Row(
            "B2",
            f"GET a row by id, 1 worker, 50 connections: {name}",
            f"{rate:,.0f} req/s",
            f"{raw_rate:,.0f} req/s (raw asyncpg)",
            f"{ratio:.2f}x",
        )
        if name.startswith("generated:"):
            row.target, row.met = ">= 0.5x", verdict(ratio >= 0.5)
        report.add(row)
    limited = med["generated: GET /rooms/{id} (ReadSessionDep, session.get)"]
    unlimited_rate = med["generated, DATABASE_STATEMENT_TIMEOUT=0 (no time limits)"]
    report.add(
        Row(
            "B2",
            "the time limits' cost: statement_timeout (set once per connection) and asyncpg's"
            " command_timeout (a timer per call), GET /rooms/{id}",
            f"{limited:,.0f} req/s",
            f"{unlimited_rate:,.0f} req/s (DATABASE_STATEMENT_TIMEOUT=0)",
            f"{limited / unlimited_rate:.2f}x",
        )
    )


# --- B8: waits for a pooled connection --------------------------------------------------------


def wrk_waits(url: str, seconds: float) -> tuple[float, float, float, int]:
    """p50, p99 and longest latency (ms) and failed requests of 50 wrk connections."""
    args = ["wrk", "-t1", "-c50", f"-d{round(seconds)}s", "--timeout", "10s", "--latency", url]
    output = run(args, cwd=HERE)
    return (
        latency_ms(output, "50%"),
        latency_ms(output, "99%"),
        latency_ms(output, "Max"),
        failures(output),
    )


def bench_pool_waits(project: Project, report: Report, repeats: int, seconds: float) -> None:
    """50 clients on the default pool of 15, GET /rooms/{id}, one worker: requests take the
    pool's connections in turn (generated), against SQLAlchemy's pool order alone."""
    servers = {"h11": UVICORN_AS_SHIPPED}
    if importlib.util.find_spec("uvloop") and importlib.util.find_spec("httptools"):
        servers["uvloop + httptools"] = ("--loop", "uvloop", "--http", "httptools")
    else:
        print("  B8: uvloop or httptools is not installed; h11 only", flush=True)
    for server, options in servers.items():
        env = service_env(project, project.pg_url)
        with uvicorn(HERE, "bench_app:app", env, options=options) as base:
            room = seed_room(base)
            cases = {
                "in turn (generated)": f"{base}/rooms/{room}",
                "SQLAlchemy's pool order": f"{base}/bench/pool-order/rooms/{room}",
            }
            samples: dict[str, list[tuple[float, float, float, int]]] = {c: [] for c in cases}
            for url in cases.values():
                wrk(url, 1)  # warm up: all 15 connections open
            for _ in range(repeats):
                for case, url in cases.items():
                    samples[case].append(wrk_waits(url, seconds))
        results = {
            case: tuple(median([run[i] for run in runs]) for i in range(4))
            for case, runs in samples.items()
        }

        def waits(p50: float, p99: float, longest: float, failed: float) -> str:
            return (
                f"p50 {p50:,.0f} ms, p99 {p99:,.0f} ms ({p99 / p50:.1f}x p50),"
                f" longest {longest:,.0f} ms, {failed:.0f} failed"
            )

        p50, p99, longest, failed = results["in turn (generated)"]
        report.add(
            Row(
                "B8",
                f"GET /rooms/{{id}}, 50 connections, pool of 15, 1 worker, {server}: requests"
                " take the pool's connections in arrival order",
                waits(p50, p99, longest, failed),
                waits(*results["SQLAlchemy's pool order"]) + " (SQLAlchemy's pool order)",
                f"p99 {p99 / p50:.1f}x p50",
                "p99 <= 3x p50, none over 30 s (DATABASE_POOL_TIMEOUT)",
                verdict(p99 <= 3 * p50 and longest < 30_000 and not failed),
            )
        )


# --- B3: the event loop under slow queries --------------------------------------------------


PROBE = """
import signal
stopped = []
signal.signal(signal.SIGTERM, lambda *_: stopped.append(True))  # the load is over
import json, sys, time, httpx
url, until = sys.argv[1], float(sys.argv[2])
samples = []
with httpx.Client(timeout=30) as client:
    client.get(url)
    while time.time() < until and not stopped:
        started = time.time()
        client.get(url).raise_for_status()
        samples.append((started, time.time() - started))
        time.sleep(0.01)
print(json.dumps(samples))
"""


async def fire(base: str, path: str, requests: int) -> tuple[float, float]:
    """Send ``requests`` slow requests at once; return when they started and their wall time."""
    limits = httpx.Limits(max_connections=requests)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=120) as client:
        started = time.time()
        responses = await asyncio.gather(*(client.get(path) for _ in range(requests)))
        wall = time.time() - started
    if any(response.status_code != 200 for response in responses):
        raise SystemExit(f"B3 {path}: failed requests")
    return started, wall


def slow_load(base: str, path: str, requests: int, longest: float) -> tuple[float, list[float]]:
    """Fire the slow requests while another process probes /bench/ping every 10 ms.

    The probe runs in its own process, so that only the service's event loop, not the load
    generator, can delay it. Returns the wall time and the probe latencies during the load.
    """
    until = time.time() + longest + 1.0
    probe = subprocess.Popen(
        [PYTHON, "-c", PROBE, base + "/bench/ping", str(until)],
        stdout=subprocess.PIPE,
        text=True,
    )
    time.sleep(0.3)  # the probe is connected and sampling
    started, wall = asyncio.run(fire(base, path, requests))
    probe.terminate()  # it stops sampling and prints what it saw
    samples = json.loads(probe.communicate(timeout=longest + 60)[0])
    during = [latency for at, latency in samples if started <= at <= started + wall]
    return wall, during


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def bench_event_loop(project: Project, report: Report, requests: int) -> None:
    wait = 0.2
    pool = 15  # pool_size 15 + max_overflow 0, the generated defaults (SQLite files alike)
    sqlite_url = f"sqlite+aiosqlite:///{WORK / 'b3.db'}"
    cases = {
        "PostgreSQL pg_sleep": (project.pg_url, "/bench/sleep", requests),
        "SQLite file, slow query": (sqlite_url, "/bench/sleep", requests),
        # Fewer requests: they run one after the other, so 100 would take 20 s.
        "contrast: blocking driver call in async def": (project.pg_url, "/bench/blocking", 20),
    }
    for name, (url, path, count) in cases.items():
        ideal = -(-count // pool) * wait
        with uvicorn(HERE, "bench_app:app", service_env(project, url)) as base:
            wall, latencies = slow_load(base, f"{path}?seconds={wait}", count, count * wait)
        # No probe may finish at all while the loop is blocked (the contrast, or a machine
        # too busy): that is an infinite p99, not a crash.
        probe = p99(latencies) * 1000 if latencies else float("inf")
        ok = probe <= 20 and wall <= 1.5 * ideal
        report.add(
            Row(
                "B3",
                f"{count} requests each waiting {wait} s: {name}",
                f"probe p99 {probe:.1f} ms ({len(latencies)} probes); wall {wall:.2f} s",
                f"ideal wall {ideal:.2f} s (pool of {pool})",
                f"{wall / ideal:.2f}x ideal",
                "" if name.startswith("contrast") else "p99 <= 20 ms, wall <= 1.5x",
                "(expected to fail)" if name.startswith("contrast") else verdict(ok),
            )
        )


# --- B4: start-up ---------------------------------------------------------------------------


def first_ready_seconds(project: Project) -> tuple[float, float]:
    """Seconds from spawning uvicorn to the first 200 of /readyz; and to import the app."""
    env = service_env(project, project.pg_url)
    started = time.perf_counter()
    run([PYTHON, "-c", f"import {project.package}.main"], cwd=project.path, env=env)
    imported = time.perf_counter() - started
    port = free_port()
    started = time.perf_counter()
    server = subprocess.Popen(
        [
            PYTHON,
            "-m",
            "uvicorn",
            f"{project.package}.main:app",
            "--port",
            str(port),
            "--log-level",
            "warning",
            *UVICORN_AS_SHIPPED,
        ],
        cwd=project.path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    return time.perf_counter() - started, imported
            except httpx.TransportError:
                pass
            if time.perf_counter() - started > 30:
                raise SystemExit("the service did not answer /readyz within 30 s")
            time.sleep(0.005)
    finally:
        server.terminate()
        server.wait(timeout=30)


def bench_startup(project: Project, report: Report, repeats: int) -> None:
    python_alone = median(
        [timed(lambda: run([PYTHON, "-c", "pass"], cwd=HERE)) for _ in range(repeats)]
    )
    results = [first_ready_seconds(project) for _ in range(repeats)]
    to_ready = median([r[0] for r in results])
    to_import = median([r[1] for r in results])
    report.add(
        Row(
            "B4",
            "import the app (python -c import)",
            f"{to_import:.2f} s",
            f"{python_alone:.2f} s (python -c pass)",
            "",
            "",
            "",
        )
    )
    report.add(
        Row(
            "B4",
            "spawn uvicorn to first 200 from /readyz",
            f"{to_ready:.2f} s",
            f"{python_alone:.2f} s (python -c pass)",
            f"{to_ready / python_alone:.1f}x",
            "<= 1.0 s",
            verdict(to_ready <= 1.0),
        )
    )
    bake = median(bake_times(repeats))
    report.add(
        Row(
            "B4",
            "cookiecutter bake (--no-input, in process)",
            f"{bake:.2f} s",
            "",
            "",
            "<= 0.5 s",
            verdict(bake <= 0.5),
        )
    )


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


# --- B5: streaming appends ------------------------------------------------------------------


def bench_appends(project: Project, report: Report, repeats: int, seconds: float) -> None:
    """10 writers appending to transcripts of their own + 5 readers of 50-segment pages, on
    a SQLite file and on PostgreSQL, one uvicorn worker and two; medians of ``repeats``.

    With two workers, where wrk's connections land is luck: one worker accepts each wrk's
    burst of connections, so the 10 writers always share a worker, and the readers may join
    them, go to the other, or split. A writer's trips to SQLite's thread wait behind the
    readers of its worker, and it holds the write lock of every process meanwhile: the rate
    swings about sixfold with the landing (one run on a two-core machine: 59 appends/s with
    all 15 in one worker, 321/s with the readers in the other). So each two-worker row says
    where the connections landed, and two processes with the load spread evenly (5 writers +
    3 readers and 5 + 2, as a balancer in front spreads clients) are measured too; the pace
    target holds only if both meet it. Then what bounds SQLite's pace: the writers alone in
    a worker, and how long one append holds SQLite's write lock, alone in an event loop
    (append_floor.py)."""
    sqlite_url = f"sqlite+aiosqlite:///{WORK / 'b5.db'}"
    (WORK / "b5.db").unlink(missing_ok=True)
    run(
        [PYTHON, "-m", "alembic", "upgrade", "head"],
        cwd=project.path,
        env=clean_env(DATABASE_URL=sqlite_url),
    )
    # (database, workers, segments per append, readers)
    cases = [
        (backend, workers, 1, 5) for workers in (1, 2) for backend in ("SQLite file", "PostgreSQL")
    ]
    cases += [("SQLite file", 1, 50, 5), ("PostgreSQL", 1, 50, 5), ("SQLite file", 1, 1, 0)]
    results: dict[tuple[str, int, int, int], list[Stream]] = {case: [] for case in cases}
    spread: dict[str, list[Stream]] = {"SQLite file": [], "PostgreSQL": []}  # 2 processes
    for _ in range(repeats):
        for backend, workers, batch, readers in cases:
            url = sqlite_url if backend == "SQLite file" else project.pg_url
            with uvicorn(HERE, "bench_app:app", service_env(project, url), workers=workers) as base:
                results[(backend, workers, batch, readers)].append(
                    stream(base, seconds, batch, readers)
                )
        for backend, runs in spread.items():
            url = sqlite_url if backend == "SQLite file" else project.pg_url
            with (
                uvicorn(HERE, "bench_app:app", service_env(project, url)) as first,
                uvicorn(HERE, "bench_app:app", service_env(project, url)) as second,
            ):
                runs.append(stream_spread(first, second, seconds))
    postgres_one_worker = median([r[0] for r in results[("PostgreSQL", 1, 1, 5)]])

    def add(
        backend: str, where: str, batch: int, readers: int, runs: list[Stream], workers: int
    ) -> None:
        rate, p99, read_rate = (median([float(r[i]) for r in runs]) for i in range(3))
        value = f"{rate * batch:,.0f} segments/s ({rate:,.0f} req/s), writer p99 {p99:,.0f} ms"
        if workers == 2:  # a worker that served none: 0+0
            landed = [r[3] if " / " in r[3] else f"{r[3]} / 0+0" for r in runs]
            value += "; landed (writers+readers per worker): " + ", ".join(landed)
        row = Row(
            "B5",
            f"append batches of {batch}, {backend}, {where}",
            value,
            f"PostgreSQL 1 worker {postgres_one_worker:,.0f} req/s"
            + (f"; readers {read_rate:,.0f} req/s" if readers else ""),
            f"{rate / postgres_one_worker:.2f}x" if batch == 1 else "",
        )
        if backend == "SQLite file" and batch == 1 and readers:
            row.target = "p99 <= 300 ms" if workers == 1 else "p99 <= 200 ms, >= 1.0x"
            ok = p99 <= 300 if workers == 1 else p99 <= 200 and rate >= postgres_one_worker
            row.met = verdict(ok)
        report.add(row)

    for (backend, workers, batch, readers), runs in results.items():
        plural = "s" * (workers > 1)
        where = f"{workers} worker{plural}, 10 writers + {readers} readers"
        add(backend, where, batch, readers, runs, workers)
        if (workers, batch) == (2, 1):
            where = "2 processes of 1 worker, the load spread evenly: 5 writers + 3 readers, 5 + 2"
            add(backend, where, 1, 5, spread[backend], 2)
    # SQLite's lock is one for every process: appends/s can never beat 1 / this hold.
    output = run(
        [PYTHON, str(HERE / "append_floor.py"), str(round(200 * seconds))],
        cwd=project.path,
        env=service_env(project, sqlite_url),
    )
    floor = json.loads(re.search(r'\{"hold_ms".*\}', output).group(0))  # type: ignore[union-attr]
    hold = floor["hold_ms"]
    report.add(
        Row(
            "B5",
            "floor: SQLite's write lock held per append (BEGIN IMMEDIATE to COMMIT), one writer "
            "alone in its event loop (no HTTP, no readers), through SessionDep's dependency",
            f"{hold:.2f} ms: at most {1000 / hold:,.0f} appends/s on any number of workers; "
            f"the event loop's CPU {floor['loop_cpu_ms']:.2f} ms per append",
            f"PostgreSQL 1 worker under the load above: {postgres_one_worker:,.0f} req/s "
            f"({1000 / postgres_one_worker:.2f} ms per append)",
            f"{1000 / hold / postgres_one_worker:.2f}x",
        )
    )


# stream()'s answer: appends/s, their p99 (ms), reads/s, where the connections landed
Stream = tuple[float, float, float, str]


def stream(base: str, seconds: float, batch: int, readers: int, writers: int = 10) -> Stream:
    """Append requests/s and their p99 (ms) of ``writers``, with readers/s of ``readers``;
    and where their connections landed, halfway through (landing())."""
    room = seed_room(base)
    created = httpx.post(
        base + "/transcripts", json={"room_id": room, "title": "stream", "language": "en"}
    )
    created.raise_for_status()
    transcript = created.json()["id"]
    reader = [f"-c{readers}", f"{base}/transcripts/{transcript}?limit=50"] if readers else None
    landed: list[str] = []
    probe = threading.Timer(seconds / 2, lambda: landed.append(landing(base)))
    probe.start()
    rate, bad, p99, _, read_rate = appends_while_reading(
        base, seconds, writers, batch, [transcript], reader
    )
    probe.join()
    page = httpx.get(f"{base}/transcripts/{transcript}", params={"limit": 1000}).json()
    if bad or not page["segments"]:
        raise SystemExit(f"B5 batch {batch} on {base}: {bad} failed appends")
    return rate, p99, read_rate, landed[0] if landed else "unknown"


def stream_spread(first: str, second: str, seconds: float) -> Stream:
    """stream()'s load spread over two servers at once (5 writers + 3 readers, 5 + 2):
    appends/s and reads/s of both, the higher of their p99s, and where each landed."""
    with ThreadPoolExecutor(2) as pool:
        one, two = pool.map(
            lambda args: stream(*args), [(first, seconds, 1, 3, 5), (second, seconds, 1, 2, 5)]
        )
    return one[0] + two[0], max(one[1], two[1]), one[2] + two[2], f"{one[3]} / {two[3]}"


def landing(base: str) -> str:
    """Where wrk's connections to ``base`` are served, from ss: writers+readers per serving
    process (a writer's wrk runs append.lua), most writers first, e.g. "10+0 / 0+5"."""
    if shutil.which("ss") is None:
        return "unknown (ss, of iproute2, is not installed)"
    port = int(base.rsplit(":", 1)[1])
    writer: dict[int, bool] = {}  # by the client's port: is it a writer's?
    served: list[tuple[int, str]] = []  # (the client's port, the serving process)
    for line in run(["ss", "-Htnp", "state", "established"], cwd=HERE).splitlines():
        local, peer = (int(address.rsplit(":", 1)[1]) for address in line.split()[2:4])
        owner = re.search(r"pid=(\d+)", line)
        if owner and peer == port:
            command = Path(f"/proc/{owner.group(1)}/cmdline").read_bytes()
            writer[local] = b"append.lua" in command
        elif owner and local == port:
            served.append((peer, owner.group(1)))
    counts: dict[str, list[int]] = {}
    for client, process in served:
        counts.setdefault(process, [0, 0])[0 if writer.get(client) else 1] += 1
    return " / ".join(f"{w}+{r}" for w, r in sorted(counts.values(), reverse=True))


def appends_while_reading(
    base: str,
    seconds: float,
    writers: int,
    batch: int,
    transcripts: list[int],
    reader: list[str] | None,
    reader_env: dict[str, str] | None = None,
) -> tuple[float, int, float, int, float]:
    """``writers`` connections appending ``batch`` segments at a time to ``transcripts`` in
    turn, while another wrk (``reader``: its arguments; None: no reads) reads: appends/s,
    failed appends, the appends' p99 (ms), appends answered, and reads/s."""
    reading = None
    if reader is not None:
        reading = subprocess.Popen(
            ["wrk", "-t1", f"-d{round(seconds)}s", *reader],
            env=reader_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
    rate, bad, p99, answered = wrk_latency(
        base,
        seconds,
        connections=writers,
        script=HERE / "append.lua",
        env={
            **os.environ,
            "BATCH": str(batch),
            "TRANSCRIPTS": ",".join(str(transcript) for transcript in transcripts),
        },
    )
    if reading is None:
        return rate, bad, p99, answered, 0.0
    reads = reading.communicate(timeout=seconds + 30)[0]
    read_rate = float(re.search(r"Requests/sec:\s+([\d.]+)", reads).group(1))  # type: ignore[union-attr]
    return rate, bad, p99, answered, read_rate


BIG_TRANSCRIPT = 100_000
BIG_BATCH = 1000


def segment_batch(first: int) -> list[dict[str, object]]:
    return [
        {"sequence": n, "speaker": "ana", "start_ms": n, "end_ms": n, "text": "hello"}
        for n in range(first, first + BIG_BATCH)
    ]


async def _old_pre_check(database: str, transcript: int, runs: int) -> tuple[float, int]:
    """The pre-check the template ran before (sequence IN 1,000 parameters), prepared once as
    asyncpg does: the time of its last run, after PostgreSQL may have settled on a generic
    plan, and how many rows of the table that run read."""
    url = SERVER_URL.set(database=database)
    connection = await asyncpg.connect(
        host=url.host,
        port=url.port or 5432,
        user=url.username,
        password=url.password,
        database=database,
    )
    try:
        values = ", ".join(f"${n + 2}" for n in range(BIG_BATCH))
        statement = await connection.prepare(
            "SELECT sequence FROM transcript_segments WHERE transcript_id = $1"
            f" AND sequence IN ({values}) ORDER BY sequence"
        )
        rows_read = (
            "SELECT seq_tup_read + coalesce(idx_tup_fetch, 0) FROM pg_stat_xact_user_tables"
            " WHERE relname = 'transcript_segments'"
        )
        last, read = 0.0, 0
        for run_number in range(runs):
            first = 10 * BIG_TRANSCRIPT + run_number * BIG_BATCH
            async with connection.transaction():
                before = await connection.fetchval(rows_read)
                started = time.perf_counter()
                await statement.fetch(transcript, *range(first, first + BIG_BATCH))
                last = time.perf_counter() - started
                read = await connection.fetchval(rows_read) - before
        return last, read
    finally:
        await connection.close()


def bench_big_append(project: Project, report: Report, repeats: int) -> None:
    """Append 1,000 segments to a transcript of 100,000, on a table never analyzed."""
    database = f"bench_{uuid.uuid4().hex[:12]}"
    sql(f'CREATE DATABASE "{database}"')
    url = async_url(database)
    try:
        run(
            [PYTHON, "-m", "alembic", "upgrade", "head"],
            cwd=project.path,
            env=clean_env(DATABASE_URL=url),
        )
        with uvicorn(HERE, "bench_app:app", service_env(project, url)) as base:
            room = seed_room(base)
            transcripts = []
            for title in ("empty", "big"):
                created = httpx.post(
                    base + "/transcripts", json={"room_id": room, "title": title, "language": "en"}
                )
                created.raise_for_status()
                transcripts.append(created.json()["id"])
            empty, big = transcripts
            sql(
                "INSERT INTO transcript_segments (transcript_id, sequence, speaker, start_ms,"
                f" end_ms, text, created_at, updated_at) SELECT {big}, n, 'ana', n, n, 'hi',"
                f" now(), now() FROM generate_series(0, {BIG_TRANSCRIPT - 1}) n",
                database,
            )
            times: dict[int, list[float]] = {empty: [], big: []}
            # Seven rounds at least: PostgreSQL may switch a prepared statement to a generic
            # plan after five runs, which is where the old pre-check went wrong.
            for round_number in range(max(repeats, 7)):
                for transcript in (empty, big):
                    batch = segment_batch(BIG_TRANSCRIPT + round_number * BIG_BATCH)
                    started = time.perf_counter()
                    response = httpx.post(
                        f"{base}/transcripts/{transcript}/segments", json=batch, timeout=60
                    )
                    times[transcript].append(time.perf_counter() - started)
                    if response.status_code != 201:
                        raise SystemExit(
                            f"B5 big append: {response.status_code} {response.text[:300]}"
                        )
        old, old_read = asyncio.run(_old_pre_check(database, big, 7))
    finally:
        sql(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    big_ms, empty_ms = median(times[big][2:]) * 1000, median(times[empty][2:]) * 1000
    report.add(
        Row(
            "B5",
            f"POST {BIG_BATCH:,} segments to a transcript of {BIG_TRANSCRIPT:,}, PostgreSQL,"
            " never analyzed",
            f"{big_ms:.0f} ms",
            f"{empty_ms:.0f} ms (to an empty transcript)",
            f"{big_ms / empty_ms:.2f}x",
            "< 100 ms",
            verdict(big_ms < 100),
        )
    )
    report.add(
        Row(
            "B5",
            "contrast: the old pre-check alone (sequence IN 1,000 parameters), 7th run",
            f"{old * 1000:.0f} ms, {old_read:,} rows read",
            f"{BIG_TRANSCRIPT:,} rows in the transcript",
            "",
            "",
            "",
        )
    )


# --- B7: SQLite under many writers -----------------------------------------------------------


def bench_sqlite_soak(project: Project, report: Report, seconds: float, quick: bool) -> None:
    """20 writers, each appending to a transcript of its own, + 20 readers, on one SQLite
    file: no append may fail, p99 <= 2 s, every acknowledged segment stored, file intact.
    A quick run tries the first case only."""
    cases = [(2, 1), (1, 1), (2, 500), (1, 500)]
    for workers, batch in cases[:1] if quick else cases:
        path = WORK / f"b7-{workers}-{batch}.db"
        for leftover in WORK.glob(f"{path.name}*"):
            leftover.unlink()
        url = f"sqlite+aiosqlite:///{path}"
        run(
            [PYTHON, "-m", "alembic", "upgrade", "head"],
            cwd=project.path,
            env=clean_env(DATABASE_URL=url),
        )
        with uvicorn(HERE, "bench_app:app", service_env(project, url), workers=workers) as base:
            room = seed_room(base)
            transcripts = [
                httpx.post(
                    base + "/transcripts",
                    json={"room_id": room, "title": f"soak {n}", "language": "en"},
                ).json()["id"]
                for n in range(20)
            ]
            paths = f"/transcripts/{transcripts[0]}?limit=200,/rooms/{room},/rooms?limit=20"
            reader = ["-c20", "-s", str(HERE / "soak_read.lua"), base]
            rate, bad, p99, answered, read_rate = appends_while_reading(
                base, seconds, 20, batch, transcripts, reader, {**os.environ, "READ_PATHS": paths}
            )
        with closing(sqlite3.connect(path)) as check:
            stored = check.execute("SELECT count(*) FROM transcript_segments").fetchone()[0]
            intact = check.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        acknowledged = (answered - bad) * batch
        report.add(
            Row(
                "B7",
                f"{round(seconds)} s, 20 writers (batches of {batch}) + 20 readers, SQLite file, "
                f"{workers} worker{'s' * (workers > 1)}",
                f"{answered:,} appends ({rate:,.0f}/s), {bad} failed, writer p99 {p99:,.0f} ms; "
                f"{acknowledged:,} segments acknowledged, {stored:,} stored (with the appends"
                f" in flight when wrk stopped counting), integrity {'ok' if intact else 'BROKEN'}",
                f"readers {read_rate:,.0f} req/s",
                "",
                "0 failed, p99 <= 2,000 ms, intact",
                verdict(bad == 0 and p99 <= 2000 and intact and stored >= acknowledged),
            )
        )


# --- B6: reads from a streaming replica ----------------------------------------------------


def replica_state(base: str) -> str:
    """The state /readyz reports for the service's one read replica."""
    response = httpx.get(base + "/readyz", timeout=5)
    response.raise_for_status()
    (replica,) = response.json()["replicas"].values()
    return str(replica["state"])


def bench_replica(project: Project, report: Report, repeats: int, seconds: float) -> None:
    """B2's read on the primary only, then with one streaming replica (DATABASE_READ_URL).

    The pair is started here (tests/helpers.py ``PrimaryWithReplica``): initdb, pg_basebackup
    and streaming replication in a temporary folder, on the same machine as the service.
    """
    servers = PrimaryWithReplica()
    servers.start()
    try:
        servers.fetchval("primary", "CREATE DATABASE bench")
        primary = servers.url("primary", "bench")
        run(
            [PYTHON, "-m", "alembic", "upgrade", "head"],
            cwd=project.path,
            env=clean_env(DATABASE_URL=primary),
        )
        replicated = {"DATABASE_READ_URL": servers.url("replica", "bench")}
        with (
            uvicorn(HERE, "bench_app:app", service_env(project, primary)) as primary_only,
            uvicorn(
                HERE, "bench_app:app", service_env(project, primary, **replicated)
            ) as with_replica,
        ):
            room = seed_room(primary_only)
            deadline = time.monotonic() + 30
            while (
                replica_state(with_replica) != "up"
                or httpx.get(f"{with_replica}/rooms/{room}").status_code != 200
            ):
                if time.monotonic() > deadline:
                    raise SystemExit("B6: the replica did not come up with the room")
                time.sleep(0.1)
            targets = {"primary only": primary_only, "one replica": with_replica}
            rates: dict[str, list[float]] = {name: [] for name in targets}
            for base in targets.values():
                wrk(f"{base}/rooms/{room}", 1)  # warm up
            for _ in range(repeats):
                for name, base in targets.items():
                    rate, bad = wrk(f"{base}/rooms/{room}", seconds)
                    failed_requests(f"B6 {name}", bad)
                    rates[name].append(rate)
            # The replica was up all along, so the router sent every read to it.
            if replica_state(with_replica) != "up":
                raise SystemExit("B6: the replica was not up after the run")
    finally:
        servers.stop()
    alone, replicated_rate = median(rates["primary only"]), median(rates["one replica"])
    report.add(
        Row(
            "B6",
            "GET a row by id, 1 worker, 50 connections, through DATABASE_READ_URL to one"
            " streaming replica; primary and replica share this machine's cores, so this"
            " shows the routing's cost, not scaling",
            f"{replicated_rate:,.0f} req/s",
            f"{alone:,.0f} req/s (primary only)",
            f"{replicated_rate / alone:.2f}x",
            "",
            "",
        )
    )


# --- B8: the cost of seeing inside ---------------------------------------------------------


@contextmanager
def otlp_sink() -> Iterator[str]:
    """An OTLP/HTTP endpoint that takes every export and answers 200 at once; its URL."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from threading import Thread

    class Sink(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Sink)
    Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) process ``pid`` has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench_observability(project: Project, report: Report, repeats: int, seconds: float) -> None:
    """B2's read and B5's append (1 worker, PostgreSQL) with nothing on (the default), with
    traces exported over OTLP/HTTP (default sampler: every request), and with metrics: the
    rates, and the service's CPU time per request (steadier on a shared machine)."""
    with otlp_sink() as sink:
        settings = {
            "off (default)": {},
            "traces on (OTLP/HTTP, default sampler)": {"OTEL_EXPORTER_OTLP_ENDPOINT": sink},
            "metrics on (METRICS_PORT)": {"METRICS_PORT": str(free_port())},
        }
        # Per case and run: reads/s, appends/s, CPU us per read, CPU us per append.
        results: dict[str, list[tuple[float, float, float, float]]] = {n: [] for n in settings}
        for _ in range(repeats):
            for name, extra in settings.items():
                env = service_env(project, project.pg_url, **extra)
                pids: list[int] = []
                with uvicorn(HERE, "bench_app:app", env, pids=pids) as base:
                    room = seed_room(base)
                    body = {"room_id": room, "title": "b8", "language": "en"}
                    transcript = httpx.post(base + "/transcripts", json=body).json()["id"]
                    wrk(f"{base}/rooms/{room}", 1)  # warm up
                    started = cpu_seconds(pids[0])
                    read, bad, _, reads = wrk_latency(f"{base}/rooms/{room}", seconds)
                    between = cpu_seconds(pids[0])
                    append, bad_appends, _, appends = wrk_latency(
                        base,
                        seconds,
                        connections=10,
                        script=HERE / "append.lua",
                        env={**os.environ, "BATCH": "1", "TRANSCRIPTS": str(transcript)},
                    )
                    ended = cpu_seconds(pids[0])
                    failed_requests(f"B9 {name}", bad + bad_appends)
                    results[name].append(
                        (
                            read,
                            append,
                            (between - started) / reads * 1e6,
                            (ended - between) / appends * 1e6,
                        )
                    )
    off = [median([r[i] for r in results["off (default)"]]) for i in range(4)]
    for name, runs in results.items():
        read, append, cpu_read, cpu_append = (median([r[i] for r in runs]) for i in range(4))
        report.add(
            Row(
                "B9",
                f"observability {name}, 1 worker, PostgreSQL: GET /rooms/{{id}} (50 connections)"
                " / append 1 segment (10 connections); rate, and the service's CPU per request",
                f"{read:,.0f} / {append:,.0f} req/s; {cpu_read:,.0f} / {cpu_append:,.0f} us CPU",
                f"{off[0]:,.0f} / {off[1]:,.0f} req/s; {off[2]:,.0f} / {off[3]:,.0f} us CPU (off)",
                f"{read / off[0]:.2f}x / {append / off[1]:.2f}x; CPU {cpu_read / off[2]:.2f}x"
                f" / {cpu_append / off[3]:.2f}x",
            )
        )


# --- the report -----------------------------------------------------------------------------


def versions() -> str:
    import aiosqlite
    import fastapi
    import pydantic
    import sqlalchemy
    import uvicorn as uvicorn_package

    async def server_version() -> str:
        connection = await asyncpg.connect(
            host=SERVER_URL.host,
            port=SERVER_URL.port or 5432,
            user=SERVER_URL.username,
            database=SERVER_URL.database,
        )
        try:
            return str(await connection.fetchval("SHOW server_version"))
        finally:
            await connection.close()

    cpu = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        match = re.search(r"model name\s*:\s*(.+)", cpuinfo.read_text())
        cpu = match.group(1) if match else cpu
    memory = ""
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        kb = int(re.search(r"MemTotal:\s+(\d+)", meminfo.read_text()).group(1))  # type: ignore[union-attr]
        memory = f"{kb / 1024 / 1024:.0f} GiB"
    # wrk --version prints its version and exits 1.
    wrk_output = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False)
    wrk_version = (wrk_output.stdout + wrk_output.stderr).splitlines()[0]
    return "\n".join(
        [
            f"- machine: {os.cpu_count()} cores ({cpu}), {memory}, {platform.platform()}",
            f"- Python {platform.python_version()}; SQLAlchemy {sqlalchemy.__version__}, "
            f"FastAPI {fastapi.__version__}, pydantic {pydantic.__version__}, "
            f"asyncpg {asyncpg.__version__}, aiosqlite {aiosqlite.__version__}, "
            f"uvicorn {uvicorn_package.__version__} "
            "(asyncio loop, h11, as shipped; B8 also uvloop)",
            f"- PostgreSQL {asyncio.run(server_version())} on loopback; {wrk_version}",
        ]
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short smoke run (numbers are rough)")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=["B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B9"],
        help="run these benchmarks only; the table is printed, RESULTS.md is left alone",
    )
    parser.add_argument("--output", type=Path, default=HERE / "RESULTS.md")
    options = parser.parse_args()
    global STOP_ON_FAILURES
    STOP_ON_FAILURES = not options.quick
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")
    repeats, seconds, count = (1, 1.0, 20) if options.quick else (3, 5.0, 200)
    benches: dict[str, tuple[str, Callable[[Project, Report], None]]] = {
        "B1": (
            "test harness",
            # The suite's wall time is a measurement, not a smoke check: not in --quick.
            lambda p, r: (
                bench_harness(p, r, repeats, count),
                None if options.quick else bench_suite(r, repeats),
            ),
        ),
        "B2": ("read path", lambda p, r: bench_read_path(p, r, repeats, seconds)),
        "B3": ("event loop", lambda p, r: bench_event_loop(p, r, 100)),
        "B4": ("start-up", lambda p, r: bench_startup(p, r, 3 if options.quick else 5)),
        "B5": (
            "appends",
            lambda p, r: (
                bench_appends(p, r, repeats, seconds),
                bench_big_append(p, r, repeats),
            ),
        ),
        "B6": ("read replica", lambda p, r: bench_replica(p, r, repeats, seconds)),
        "B7": (
            "SQLite soak",
            lambda p, r: bench_sqlite_soak(p, r, 3 if options.quick else 60, options.quick),
        ),
        "B8": ("connection waits", lambda p, r: bench_pool_waits(p, r, repeats, seconds)),
        "B9": ("observability", lambda p, r: bench_observability(p, r, repeats, seconds)),
    }
    WORK.mkdir(exist_ok=True)
    report = Report()
    started = time.perf_counter()
    print("baking and migrating ...", flush=True)
    project = prepare_project()
    try:
        for name, (title, bench) in benches.items():
            if options.only is None or name in options.only:
                print(f"{name} {title}", flush=True)
                bench(project, report)
    finally:
        sql(f'DROP DATABASE IF EXISTS "{project.database}" WITH (FORCE)')
    table = report.markdown()
    print("\n" + table)
    if options.only:
        return 0
    options.output.write_text(
        "# Benchmark results\n\n"
        f"Written by `benchmarks/run.py{' --quick' if options.quick else ''}` on "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} in "
        f"{time.perf_counter() - started:.0f} s. Medians of {repeats} run(s); every baseline "
        "was measured in the same run, on the same machine.\n\n"
        f"{versions()}\n\n{table}\n"
    )
    print(f"\nwritten to {options.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
