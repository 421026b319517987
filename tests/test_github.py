"""The generated project's GitHub files: valid, audited, and what the workflow runs passes.

check-jsonschema proves the shape of ``ci.yml`` and ``dependabot.yml`` against GitHub's
published schemas and zizmor audits them for security mistakes, for each ``python_version``
(the only answer the files depend on, which a test proves too). The slow test runs every
``run:`` step of every job of ``ci.yml`` on a default bake, the way GitHub would run it, with
the Python it asks for (3.14: in the Debian root of tests/python_root.py where the host lacks
it).
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy.engine import URL, make_url

from tests.helpers import (
    OPTIONS,
    PostgresServer,
    clean_env,
    host_interpreter,
    run,
    tool,
)
from tests.python_root import in_root

WORKFLOW = Path(".github/workflows/ci.yml")
DEPENDABOT = Path(".github/dependabot.yml")
GITHUB_FILES = (WORKFLOW, DEPENDABOT)
# `uses: owner/repo@<40-hex commit> # vX.Y.Z`: immutable, and still readable by a person.
PINNED_ACTION = re.compile(r"uses: [\w.-]+/[\w./-]+@[0-9a-f]{40} # v\d+\.\d+\.\d+")
POSTGRES_URL = re.compile(r"^postgres(?:ql)?(?:\+\w+)?://")
# What the local runner below understands; anything else would be silently ignored by it.
RUNNABLE_JOB_KEYS = {"name", "runs-on", "timeout-minutes", "services", "env", "steps"}
RUNNABLE_STEP_KEYS = {"name", "id", "uses", "with", "run", "env"}


def load_yaml(path: Path) -> dict[Any, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict), path
    return data


def bake(cookies_session: Any, **context: str) -> Path:
    result = cookies_session.bake(extra_context=context)
    assert result.exception is None, result.exception
    assert result.exit_code == 0
    return Path(result.project_path)


@pytest.fixture(scope="module", params=OPTIONS["python_version"], ids=lambda v: f"py{v}")
def baked(request: pytest.FixtureRequest, cookies_session: Any) -> Path:
    """A bake for each ``python_version``, the other answers at their defaults."""
    return bake(cookies_session, python_version=request.param)


@pytest.fixture(scope="module")
def workflow(cookies_session: Any) -> dict[Any, Any]:
    """The default bake's ``ci.yml``, parsed."""
    return load_yaml(bake(cookies_session) / WORKFLOW)


def test_github_files_vary_only_with_the_python_version(cookies_session: Any) -> None:
    texts: dict[str, set[tuple[str, ...]]] = {}
    for version in OPTIONS["python_version"]:
        for database in OPTIONS["database"]:
            for domain in OPTIONS["example_domain"]:
                project = bake(
                    cookies_session,
                    python_version=version,
                    database=database,
                    example_domain=domain,
                    project_name="Other Name",
                )
                files = tuple((project / name).read_text(encoding="utf-8") for name in GITHUB_FILES)
                texts.setdefault(version, set()).add(files)
    assert {version: len(variants) for version, variants in texts.items()} == dict.fromkeys(
        OPTIONS["python_version"], 1
    )


def test_workflow_passes_the_github_workflow_schema(baked: Path) -> None:
    schema = ["--builtin-schema", "vendor.github-workflows"]
    run([tool("check-jsonschema"), *schema, str(baked / WORKFLOW)], cwd=baked)


def test_dependabot_config_passes_the_dependabot_schema(baked: Path) -> None:
    schema = ["--builtin-schema", "vendor.dependabot"]
    run([tool("check-jsonschema"), *schema, str(baked / DEPENDABOT)], cwd=baked)


def zizmor_findings(project: Path, *options: str) -> list[dict[str, Any]]:
    """zizmor's findings on ``.github`` of ``project``, offline."""
    result = subprocess.run(
        [tool("zizmor"), "--offline", "--format=json", *options, ".github"],
        cwd=project,
        capture_output=True,
        text=True,
        check=False,
    )
    # zizmor exits 0 without findings and 10 + the highest severity with some.
    assert result.returncode in {0, 11, 12, 13, 14}, result.stderr
    findings: list[dict[str, Any]] = json.loads(result.stdout)
    return findings


def test_zizmor_finds_nothing_in_the_github_files(baked: Path) -> None:
    assert zizmor_findings(baked) == []


def test_zizmor_pedantic_finds_nothing_in_the_github_files(baked: Path) -> None:
    # The PostgreSQL service image too is pinned by digest (beside its major version).
    assert zizmor_findings(baked, "--persona=pedantic") == []


def test_workflow_tests_on_the_postgres_image_compose_runs(baked: Path) -> None:
    workflow = load_yaml(baked / WORKFLOW)
    compose = load_yaml(baked / "compose.yaml")
    images = {
        job["services"]["postgres"]["image"]
        for job in workflow["jobs"].values()
        if "services" in job
    }
    assert images == {compose["services"]["db"]["image"]}
    # The newest PostgreSQL major released (18, September 2025), pinned by its digest.
    assert re.fullmatch(r"postgres:18@sha256:[0-9a-f]{64}", images.pop())


def test_workflow_pins_every_action_to_a_commit_with_its_tag(baked: Path) -> None:
    lines = [
        line.strip().removeprefix("- ")
        for line in (baked / WORKFLOW).read_text(encoding="utf-8").splitlines()
        if "uses:" in line
    ]
    assert lines
    assert [line for line in lines if not PINNED_ACTION.fullmatch(line)] == []


def test_workflow_uses_the_python_version_answer(baked: Path) -> None:
    workflow = load_yaml(baked / WORKFLOW)
    requires = re.search(r'requires-python = ">=([\d.]+)"', (baked / "pyproject.toml").read_text())
    assert requires is not None
    assert workflow["env"]["UV_PYTHON"] == requires.group(1)


def test_workflow_runs_on_pushes_to_main_and_on_pull_requests(workflow: dict[Any, Any]) -> None:
    # YAML 1.1 reads the key `on` as True.
    assert workflow[True] == {"push": {"branches": ["main"]}, "pull_request": None}


def test_workflow_token_only_reads_the_repository(workflow: dict[Any, Any]) -> None:
    assert workflow["permissions"] == {"contents": "read"}
    assert [name for name, job in workflow["jobs"].items() if "permissions" in job] == []


def test_workflow_cancels_superseded_runs_and_bounds_every_job(workflow: dict[Any, Any]) -> None:
    assert workflow["concurrency"]["cancel-in-progress"] is True
    assert "github.ref" in workflow["concurrency"]["group"]
    timeouts = {name: job.get("timeout-minutes") for name, job in workflow["jobs"].items()}
    assert all(isinstance(minutes, int) and minutes <= 30 for minutes in timeouts.values())


def test_workflow_jobs_check_out_and_install_the_locked_environment(
    workflow: dict[Any, Any],
) -> None:
    for name, job in workflow["jobs"].items():
        checkout, setup_uv, sync, *_ = job["steps"]
        assert checkout["uses"].startswith("actions/checkout@"), name
        assert checkout["with"] == {"persist-credentials": False}, name
        assert setup_uv["uses"].startswith("astral-sh/setup-uv@"), name
        assert setup_uv["with"]["enable-cache"] is True, name
        assert sync == {"run": "uv sync --locked"}, name


def test_workflow_runs_lint_types_tests_and_migrations(workflow: dict[Any, Any]) -> None:
    commands = {
        name: [step["run"] for step in job["steps"] if "run" in step]
        for name, job in workflow["jobs"].items()
    }
    everything = [command for job in commands.values() for command in job]
    for command in (
        "uv run ruff check --output-format=github",
        "uv run ruff format --check",
        "uv run mypy",
    ):
        assert command in everything
    assert commands["tests-sqlite"][-1] == "uv run pytest --cov"
    assert commands["tests-postgresql"][-1] == "uv run pytest --cov"
    assert "TEST_DATABASE_URL" not in workflow["jobs"]["tests-sqlite"].get("env", {})
    assert POSTGRES_URL.match(workflow["jobs"]["tests-postgresql"]["env"]["TEST_DATABASE_URL"])
    assert commands["migrations"][-3:] == [
        "uv run python migrations/lint.py",
        "uv run alembic upgrade head",
        "uv run alembic check",
    ]
    assert POSTGRES_URL.match(workflow["jobs"]["migrations"]["env"]["DATABASE_URL"])


def test_workflow_postgres_service_is_version_tagged_and_health_checked(
    workflow: dict[Any, Any],
) -> None:
    services = [job["services"] for job in workflow["jobs"].values() if "services" in job]
    assert len(services) == 2
    for service in services:
        postgres = service["postgres"]
        assert re.fullmatch(r"postgres:\d+@sha256:[0-9a-f]{64}", postgres["image"])
        assert "--health-cmd" in postgres["options"]
        assert "pg_isready" in postgres["options"]


def test_dependabot_updates_uv_actions_and_docker_weekly_in_groups(baked: Path) -> None:
    updates = load_yaml(baked / DEPENDABOT)["updates"]
    assert sorted(update["package-ecosystem"] for update in updates) == [
        "docker",
        "github-actions",
        "uv",
    ]
    for update in updates:
        assert update["directory"] == "/"
        assert update["schedule"]["interval"] == "weekly"
        # One pull request per ecosystem and week: every update falls in one group.
        assert [group["patterns"] for group in update["groups"].values()] == [["*"]]


# The slow test: run the workflow's jobs here. Steps that use actions (checkout, setup-uv)
# are not run: the schema and zizmor tests above check them, and a `git clone` of the
# committed bake and uv from the dev group stand in for them.


def service_url(service: Mapping[str, Any]) -> URL:
    """The URL a job reaches the ``postgres`` service container at, from its definition."""
    env = service.get("env", {})
    user = env.get("POSTGRES_USER", "postgres")
    host_port, _, container_port = str(service["ports"][0]).partition(":")
    assert container_port == "5432"
    return URL.create(
        "postgresql+asyncpg",
        username=user,
        password=env["POSTGRES_PASSWORD"],
        host="127.0.0.1",
        port=int(host_port),
        database=env.get("POSTGRES_DB", user),
    )


def local_service(
    env: Mapping[str, str], service: URL, server: PostgresServer, database: str
) -> dict[str, str]:
    """``env`` with each URL of the service pointed at ``database`` on the local server."""
    local = dict(env)
    pointing = []
    for key, value in env.items():
        if not POSTGRES_URL.match(value):
            continue
        url = make_url(value)
        assert url == service, f"{key}={value} does not point at the service ({service!r})"
        local[key] = url.set(
            host=server.url.host, port=server.url.port or 5432, database=database
        ).render_as_string(hide_password=False)
        pointing.append(key)
    assert pointing, "the job starts a PostgreSQL service that no variable points at"
    return local


def uv_path(folder: Path) -> str:
    """A PATH with uv and uvx from the dev group, and none of its other tools.

    So a step that calls ruff or pytest without `uv run` fails here as it would on GitHub.
    """
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("uv", "uvx"):
        executable = shutil.which(name, path=str(Path(sys.executable).parent))
        assert executable, f"{name} is not installed with the dev group"
        (folder / name).symlink_to(executable)
    venv = str(Path(sys.executable).parent)
    rest = [entry for entry in os.environ.get("PATH", "").split(os.pathsep) if entry != venv]
    return os.pathsep.join([str(folder), *rest])


@pytest.fixture
def database_factory(postgres: PostgresServer) -> Iterator[list[str]]:
    """Names of databases created for a test; dropped afterwards."""
    names: list[str] = []
    yield names
    for name in names:
        postgres.drop_database(name)


def expression_free(text: str, where: str) -> str:
    # The runner does not evaluate ${{ }}; run steps and env should not need it (and then
    # nothing an attacker controls can be pasted into a shell script).
    assert "${{" not in text, f"{where} uses a GitHub expression: {text!r}"
    return text


def run_step(
    command: str,
    cwd: Path,
    env: Mapping[str, str],
    where: str,
    timeout: float,
    machine: Callable[[list[str]], list[str]] = list,
) -> str:
    """Run one `run:` step with GitHub's default shell, on ``machine`` (a wrapper of the
    command; this one by default); fail with its output if it fails.

    Returns the last line of its output (shown with `pytest -rP`).
    """
    try:
        result = subprocess.run(
            machine(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", command]),
            cwd=cwd,
            env=dict(env),
            capture_output=True,
            text=True,
            timeout=max(timeout, 1),
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{where}: `{command}` ran past the job's timeout-minutes", pytrace=False)
    if result.returncode != 0:
        pytest.fail(
            f"{where}: `{command}` exited {result.returncode}\n--- stdout\n"
            f"{result.stdout[-8000:]}\n--- stderr\n{result.stderr[-8000:]}",
            pytrace=False,
        )
    lines = (result.stdout.strip() or result.stderr.strip()).splitlines()
    return lines[-1] if lines else ""


@pytest.mark.slow
def test_workflow_jobs_pass_on_a_default_bake(
    cookies_session: Any,
    postgres: PostgresServer,
    database_factory: list[str],
    tmp_path: Path,
) -> None:
    project = bake(cookies_session)
    workflow = load_yaml(project / WORKFLOW)
    assert set(workflow) <= {"name", True, "permissions", "concurrency", "env", "jobs"}
    base = clean_env(PATH=uv_path(tmp_path / "bin"), UV_PYTHON_DOWNLOADS="never", CI="true")
    # The runner has the Python the workflow asks for (setup-uv would install it): where
    # this host lacks it, the steps run in its Debian root (tests/python_root.py), whose
    # PATH too holds uv and no other tool.
    python = OPTIONS["python_version"][0]
    in_a_root = host_interpreter(python) is None
    # What a user does before the first push: commit the bake as it is (its uv.lock
    # included). The jobs then start from a clone, as actions/checkout gives them: committed
    # files only (no .env, no .venv).
    git = ["git", "-c", "user.name=CI", "-c", "user.email=ci@example.com"]
    run([*git, "init", "-q", "-b", "main"], cwd=project)
    run([*git, "add", "-A"], cwd=project)
    run([*git, "commit", "-q", "-m", "Generated project"], cwd=project)
    workflow_env = {key: str(value) for key, value in workflow.get("env", {}).items()}

    for job_name, job in workflow["jobs"].items():
        assert set(job) <= RUNNABLE_JOB_KEYS, f"{job_name}: the runner cannot run {set(job)}"
        checkout = tmp_path / job_name
        run(["git", "clone", "-q", str(project), str(checkout)], cwd=tmp_path)
        assert (checkout / "uv.lock").is_file(), "uv.lock is not committed"
        deadline = time.monotonic() + 60 * job["timeout-minutes"]
        job_env = {key: str(value) for key, value in job.get("env", {}).items()}
        if "services" in job:
            # The service container: a fresh database on the local server.
            assert set(job["services"]) == {"postgres"}, job_name
            service = service_url(job["services"]["postgres"])
            database_factory.append(postgres.create_database())
        for number, step in enumerate(job["steps"], start=1):
            where = f"job {job_name}, step {number}"
            assert set(step) <= RUNNABLE_STEP_KEYS, f"{where}: the runner cannot run {set(step)}"
            if "uses" in step:
                continue  # checked by the schema and zizmor tests, stood in for above
            env = {**workflow_env, **job_env, **step.get("env", {})}
            env = {key: expression_free(str(value), where) for key, value in env.items()}
            if "services" in job:
                env = local_service(env, service, postgres, database_factory[-1])
            command = expression_free(step["run"], where)
            started = time.monotonic()

            machine: Callable[[list[str]], list[str]] = list
            if in_a_root:
                machine = functools.partial(
                    in_root, python, checkout, env=base, uv=tool("uv"), extra_env=env
                )
            left = deadline - time.monotonic()
            last = run_step(command, checkout, {**base, **env}, where, left, machine)
            print(f"{job_name}: {command} ({time.monotonic() - started:.1f} s): {last}")
