"""The template repository's own GitHub files: valid, audited, and what the workflow runs passes.

Fast: ``.github/workflows/tests.yml`` and ``.github/dependabot.yml`` of the template pass
GitHub's schemas, zizmor (pedantic) finds nothing, actions are pinned by SHA, the PostgreSQL
service is the generated projects' image, and setup-python installs every Python offered.

Slow: every ``run:`` step of the workflow runs here, in a copy of the repository's tracked
files, as GitHub would run it, with stand-ins for what only a runner has: the job's
PostgreSQL service is a fresh database on the local server, the runner's PostgreSQL binaries
are this machine's, ``sudo`` is a no-op (the tests run as root, as CI does), and the inner
test run is narrowed by PYTEST_ADDOPTS to the fast repository checks (the whole suite is what
runs this test; running it again inside itself would never end).
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import (
    POSTGRES_BIN,
    REPO_ROOT,
    PostgresServer,
    clean_env,
    copy_tracked_files,
    find_pgbouncer,
    run,
    skip_or_fail,
    tool,
    version_key,
)
from tests.test_github import (
    PINNED_ACTION,
    expression_free,
    load_yaml,
    run_step,
    zizmor_findings,
)

WORKFLOW = REPO_ROOT / ".github" / "workflows" / "tests.yml"
DEPENDABOT = REPO_ROOT / ".github" / "dependabot.yml"
GENERATED_WORKFLOW = (
    REPO_ROOT / "{{cookiecutter.project_slug}}" / ".github" / "workflows" / "ci.yml"
)
OPTIONS = json.loads((REPO_ROOT / "cookiecutter.json").read_text())


@pytest.fixture(scope="module")
def workflow() -> dict[Any, Any]:
    return load_yaml(WORKFLOW)


def test_template_github_files_pass_their_schemas() -> None:
    check = tool("check-jsonschema")
    run([check, "--builtin-schema", "vendor.github-workflows", str(WORKFLOW)], cwd=REPO_ROOT)
    run([check, "--builtin-schema", "vendor.dependabot", str(DEPENDABOT)], cwd=REPO_ROOT)


def test_zizmor_pedantic_finds_nothing_in_the_template_github_files() -> None:
    assert zizmor_findings(REPO_ROOT, "--persona=pedantic") == []


def test_template_workflow_pins_every_action_to_a_commit_with_its_tag() -> None:
    lines = [
        line.strip().removeprefix("- ")
        for line in WORKFLOW.read_text(encoding="utf-8").splitlines()
        if "uses:" in line
    ]
    assert lines
    assert [line for line in lines if not PINNED_ACTION.fullmatch(line)] == []


def test_template_workflow_tests_on_the_generated_projects_postgres_image(
    workflow: dict[Any, Any],
) -> None:
    # The generated ci.yml is a Jinja template until baked: its image lines, as written.
    images = set(re.findall(r"^ +image: (\S+)$", GENERATED_WORKFLOW.read_text(), re.M))
    assert len(images) == 1, images
    assert {job["services"]["postgres"]["image"] for job in workflow["jobs"].values()} == images


def test_template_workflow_installs_every_python_offered_its_own_last(
    workflow: dict[Any, Any],
) -> None:
    (job,) = workflow["jobs"].values()
    setup = next(
        step for step in job["steps"] if step.get("uses", "").startswith("actions/setup-python@")
    )
    versions = setup["with"]["python-version"].split()
    assert sorted(versions) == sorted(OPTIONS["python_version"])
    # The last is python3: the template's own lowest (requires-python of its pyproject.toml).
    assert versions[-1] == min(OPTIONS["python_version"], key=version_key)


def test_template_workflow_runs_ci_and_only_reads(workflow: dict[Any, Any]) -> None:
    assert workflow[True] == {"push": {"branches": ["main"]}, "pull_request": None}
    assert workflow["permissions"] == {"contents": "read"}
    assert workflow["concurrency"]["cancel-in-progress"] is True
    (job,) = workflow["jobs"].values()
    assert job["steps"][-1]["run"].endswith(" bash .ci/run")


@pytest.mark.slow
def test_template_workflow_steps_pass_here(
    workflow: dict[Any, Any], postgres: PostgresServer, tmp_path: Path
) -> None:
    # .ci/run installs what is missing with apt-get; the test never does, it needs them here.
    for name in ("wrk", "git", "ss", "podman", "buildah", "debootstrap"):
        tool(name)
    if find_pgbouncer() is None:
        skip_or_fail("pgbouncer is not installed")
    if os.geteuid() != 0:
        skip_or_fail("the workflow's step runs as root (sudo)")
    clone = tmp_path / "checkout"
    # actions/checkout: a git work tree of the tracked files (as they are here), no .venv.
    copy_tracked_files(clone)
    git = ["git", "-c", "user.name=CI", "-c", "user.email=ci@example.com"]
    run([*git, "init", "-q", "-b", "main"], cwd=clone)
    run([*git, "add", "-A"], cwd=clone)
    run([*git, "commit", "-q", "-m", "Checked out"], cwd=clone)
    stand_ins = tmp_path / "bin"
    stand_ins.mkdir()
    (stand_ins / "sudo").write_text('#!/bin/sh\nexec "$@"\n')
    (stand_ins / "sudo").chmod(0o755)
    database = postgres.create_database()
    try:
        (job,) = workflow["jobs"].values()
        env = {key: expression_free(str(value), "job env") for key, value in job["env"].items()}
        assert job["services"]["postgres"]["env"] == {"POSTGRES_HOST_AUTH_METHOD": "trust"}
        assert env["TEMPLATE_POSTGRES_URL"] == "postgresql://postgres@127.0.0.1:5432/postgres"
        env["TEMPLATE_POSTGRES_URL"] = postgres.url.set(database=database).render_as_string(
            hide_password=False
        )
        env["TEMPLATE_POSTGRES_BIN"] = str(POSTGRES_BIN)
        path = f"{stand_ins}{os.pathsep}{os.environ['PATH']}"
        base = clean_env(PATH=path, CI="true", PYTEST_ADDOPTS="-n0 tests/test_repository.py")
        deadline = time.monotonic() + 60 * job["timeout-minutes"]
        for number, step in enumerate(job["steps"], start=1):
            if "uses" in step:
                continue  # checkout: the copy above; setup-python: this machine's Pythons
            command = expression_free(step["run"], f"step {number}")
            last = run_step(
                command, clone, {**base, **env}, f"step {number}", deadline - time.monotonic()
            )
            assert re.search(r"\b2 passed\b", last), last
    finally:
        postgres.drop_database(database)
