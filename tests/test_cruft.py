"""A project made with ``cruft create`` takes the next template commit with ``cruft update``.

The template is a git copy of this repository's tracked files (commit A). The project is
created from A, committed, and changed locally (an edit to the README the template ships, at
the other end of the file from the template's change, and a new file). The template then
changes (a README line and a new rendered file, commit B) and the project updates to B
without prompts, keeping the local change and leaving no conflict behind.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.helpers import clean_env, copy_tracked_files, run

TEMPLATE_README = Path("{{cookiecutter.project_slug}}") / "README.md"
TEMPLATE_LINE = "Updates to this project arrive with `cruft update` from the team template."
TEMPLATE_FILE = Path("{{cookiecutter.project_slug}}") / "docs" / "template-update.md"
LOCAL_SECTION = "\n## Team notes\n\nThis section belongs to the project, not to the template.\n"
CONFLICT_MARKERS = ("<<<<<<<", ">>>>>>>")

pytestmark = pytest.mark.slow


def git(repo: Path, env: dict[str, str], *args: str) -> str:
    """Run git in ``repo`` and return its output."""
    return run(["git", *args], cwd=repo, env=env).stdout.strip()


def init_repo(repo: Path, env: dict[str, str]) -> None:
    """Make ``repo`` a git repository with its own identity, whoever runs the tests."""
    git(repo, env, "init", "-q")
    git(repo, env, "config", "user.name", "Template Tests")
    git(repo, env, "config", "user.email", "template-tests@example.com")
    git(repo, env, "config", "commit.gpgsign", "false")


def commit_all(repo: Path, env: dict[str, str], message: str) -> str:
    """Commit everything in ``repo``; return the new commit's hash."""
    git(repo, env, "add", "-A")
    git(repo, env, "commit", "-q", "-m", message)
    return git(repo, env, "rev-parse", "HEAD")


@pytest.fixture
def cruft() -> str:
    """The cruft command of this environment (the dev group's ``cruft>=2.16,<3``)."""
    command = Path(sys.executable).with_name("cruft")
    if not command.is_file():
        pytest.fail(f"{command} is missing: install the dev group (cruft>=2.16,<3)", pytrace=False)
    return str(command)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """The commands' environment: an empty HOME keeps the user's git and cookiecutter config out."""
    home = tmp_path / "home"
    home.mkdir()
    return clean_env(HOME=str(home), GIT_CONFIG_NOSYSTEM="1")


def test_cruft_update_brings_the_next_template_commit_and_keeps_local_changes(
    tmp_path: Path, env: dict[str, str], cruft: str
) -> None:
    template = tmp_path / "template"
    copy_tracked_files(template)
    init_repo(template, env)
    commit_all(template, env, "A: the template as it is")

    run(
        [cruft, "create", str(template), "--no-input", "--output-dir", str(tmp_path)], tmp_path, env
    )
    project = tmp_path / "my-service"
    assert json.loads((project / ".cruft.json").read_text())["template"] == str(template)
    init_repo(project, env)
    commit_all(project, env, "Generated with cruft create")

    readme = project / "README.md"
    readme.write_text(readme.read_text(encoding="utf-8") + LOCAL_SECTION, encoding="utf-8")
    (project / "NOTES.md").write_text("Decisions of this team.\n", encoding="utf-8")
    commit_all(project, env, "Local change")

    source = template / TEMPLATE_README
    title, rest = source.read_text(encoding="utf-8").split("\n", 1)
    source.write_text(f"{title}\n\n{TEMPLATE_LINE}\n{rest}", encoding="utf-8")
    (template / TEMPLATE_FILE).parent.mkdir()
    (template / TEMPLATE_FILE).write_text("# {{ cookiecutter.project_name }} docs\n")
    commit_b = commit_all(template, env, "B: a README line and a new file")

    run([cruft, "update", "--skip-apply-ask", "--project-dir", str(project)], tmp_path, env)

    updated = readme.read_text(encoding="utf-8")
    assert updated.startswith(f"# My Service\n\n{TEMPLATE_LINE}\n")
    assert updated.endswith(LOCAL_SECTION)
    assert (project / "docs" / "template-update.md").read_text() == "# My Service docs\n"
    assert (project / "NOTES.md").read_text() == "Decisions of this team.\n"
    assert json.loads((project / ".cruft.json").read_text())["commit"] == commit_b
    run([cruft, "check", "--project-dir", str(project)], tmp_path, env)

    leftovers = [
        str(path.relative_to(project))
        for path in project.rglob("*")
        if path.is_file()
        and ".git" not in path.relative_to(project).parts
        and (
            path.suffix in {".rej", ".orig"}
            or any(marker in path.read_text(errors="replace") for marker in CONFLICT_MARKERS)
        )
    ]
    assert leftovers == []
    assert git(project, env, "diff", "--name-only", "--diff-filter=U") == ""
    # The update is left for the team to review and commit, like any other change.
    changed = git(project, env, "status", "--porcelain", "--untracked-files=all").splitlines()
    assert sorted(line.split(maxsplit=1)[1] for line in changed) == [
        ".cruft.json",
        "README.md",
        "docs/template-update.md",
    ]
