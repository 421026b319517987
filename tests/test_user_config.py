"""A team sets its own defaults: with a cookiecutter user config, or with a fork.

(a) ``cookiecutter --config-file team.yaml --no-input <template>`` where the config's
``default_context`` holds the team's answers. (b) A fork whose ``cookiecutter.json`` lists
``postgresql`` first for ``database``, baked with ``--no-input``. Both bakes default to
PostgreSQL; the user config's passes its own suite as its README runs it (SQLite, coverage
gate), which the fork's, differing from it only in name and license, would repeat.
Every command runs with a temporary HOME, and the config keeps cookiecutter's clones and
replay files under tmp, so nothing touches the user's home directory.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import REPO_ROOT, clean_env, copy_tracked_files, run
from tests.test_bake import MINIMUM_TESTS, Baked, run_suite, sync

COOKIECUTTER = str(Path(sys.executable).with_name("cookiecutter"))
# The team's answers, written to the config's default_context. A new prompt's team default is
# one more line here (e.g. "license": "Apache-2.0"); the tests assert every entry.
TEAM_DEFAULTS = {
    "project_name": "Team Meetings",
    "database": "postgresql",
    "example_domain": "meetings",
    "license": "Apache-2.0",
}
POSTGRESQL_ENV_LINE = "DATABASE_URL=postgresql+asyncpg://postgres:postgres@localhost:5432/{}\n"

pytestmark = pytest.mark.slow


def write_user_config(folder: Path, default_context: dict[str, str]) -> Path:
    """Write a cookiecutter user config that keeps clones and replay files in ``folder``."""
    config = {
        "cookiecutters_dir": str(folder / "cookiecutters"),
        "replay_dir": str(folder / "replay"),
        "default_context": default_context,
    }
    path = folder / "team.yaml"
    path.write_text(json.dumps(config, indent=2), encoding="utf-8")  # JSON is YAML
    return path


def bake(folder: Path, template: Path, config: Path) -> tuple[Path, dict[str, Any]]:
    """Bake ``template`` --no-input with ``config``; return the project and its answers."""
    output = folder / "output"
    home = folder / "home"
    home.mkdir()
    command = [COOKIECUTTER, "--config-file", str(config), "--no-input", "-o", str(output)]
    run([*command, str(template)], cwd=folder, env=clean_env(HOME=str(home)))
    assert not any(home.iterdir())
    [project] = output.iterdir()
    replay = folder / "replay" / f"{template.name}.json"
    return project, json.loads(replay.read_text(encoding="utf-8"))["cookiecutter"]


def fork_listing_postgresql_first(destination: Path) -> dict[str, Any]:
    """Copy the template to ``destination`` and list postgresql first; return the new options."""
    copy_tracked_files(destination)
    path = destination / "cookiecutter.json"
    options = json.loads(path.read_text(encoding="utf-8"))
    options["database"] = ["postgresql", *(d for d in options["database"] if d != "postgresql")]
    path.write_text(json.dumps(options, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return options


@dataclass(frozen=True)
class TeamBake:
    """A baked project and every answer cookiecutter saved for it."""

    project: Baked
    answers: dict[str, Any]


def team_bake_of(project: Path, answers: dict[str, Any]) -> TeamBake:
    """Describe a baked project by the answers cookiecutter saved for it."""
    baked = Baked(
        path=project,
        database=answers["database"],
        python_version=answers["python_version"],
        example_domain=answers["example_domain"],
        package=answers["package_name"],
    )
    return TeamBake(baked, answers)


@pytest.fixture(scope="module")
def user_config_bake(tmp_path_factory: pytest.TempPathFactory) -> TeamBake:
    """The template baked through a user config holding the team's defaults, and its answers."""
    folder = tmp_path_factory.mktemp("user-config")
    project, answers = bake(folder, REPO_ROOT, write_user_config(folder, TEAM_DEFAULTS))
    return team_bake_of(project, answers)


@pytest.fixture(scope="module")
def fork_bake(tmp_path_factory: pytest.TempPathFactory) -> TeamBake:
    """A fork listing postgresql first, baked --no-input with no default_context."""
    folder = tmp_path_factory.mktemp("fork")
    options = fork_listing_postgresql_first(folder / "fork")
    original = json.loads((REPO_ROOT / "cookiecutter.json").read_text(encoding="utf-8"))
    assert options != original
    assert {**options, "database": original["database"]} == original
    return team_bake_of(*bake(folder, folder / "fork", write_user_config(folder, {})))


@pytest.fixture(
    scope="module",
    params=[
        pytest.param(name, marks=pytest.mark.xdist_group(name))
        for name in ("user_config_bake", "fork_bake")
    ],
)
def team_bake(request: pytest.FixtureRequest) -> Baked:
    """The project a team gets with its defaults, from a user config or from a fork."""
    team: TeamBake = request.getfixturevalue(request.param)
    return team.project


def test_user_config_bake_takes_every_team_default(user_config_bake: TeamBake) -> None:
    project, answers = user_config_bake.project, user_config_bake.answers
    assert {key: answers[key] for key in TEAM_DEFAULTS} == TEAM_DEFAULTS
    assert project.path.name == "team-meetings"
    assert project.package == "team_meetings"
    readme = (project.path / "README.md").read_text(encoding="utf-8")
    assert readme.startswith("# Team Meetings\n")
    assert "Apache License" in (project.path / "LICENSE").read_text(encoding="utf-8")


def test_team_bake_defaults_to_postgresql(team_bake: Baked) -> None:
    assert team_bake.database == "postgresql"
    env = (team_bake.path / ".env").read_text(encoding="utf-8")
    assert POSTGRESQL_ENV_LINE.format(team_bake.package) in env


def test_team_bake_suite_passes(
    user_config_bake: TeamBake, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # Its own suite as its README runs it (SQLite, coverage gate), in its own uv environment
    # on the default Python. The fork's bake differs from it only in its name and license.
    team_bake = user_config_bake.project
    sync(team_bake)
    passed = run_suite(team_bake, tmp_path_factory)
    assert passed >= MINIMUM_TESTS[team_bake.example_domain]
