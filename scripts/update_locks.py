"""Write the uv.lock that every bake ships, one per ``python_version``.

A bake must build, test and ship from its first commit, so it holds a ``uv.lock`` (the
generated CI and Dockerfile install with ``uv sync --locked``). uv resolves for every Python
from ``requires-python`` up, so each ``python_version`` answer has its own lock, kept in
``{{cookiecutter.project_slug}}/uv-locks/`` with the project's name as a Jinja placeholder;
the post-generation hook keeps the chosen one as ``uv.lock``.

    .venv/bin/python scripts/update_locks.py            # after a change to the bake's pyproject
    .venv/bin/python scripts/update_locks.py --upgrade  # the newest releases in range

Each lock is made in a bake of that Python version, with uv from the dev group; Pythons the
host lacks (3.14, 3.15) run in the cached Debian roots of tests/python_root.py. The template's
tests fail while a lock does not match its pyproject.toml (``uv lock --check`` and ``uv sync
--locked`` in every bake).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from cookiecutter.main import cookiecutter  # noqa: E402

from tests.python_root import ROOTS, in_root  # noqa: E402

LOCKS = REPO_ROOT / "{{cookiecutter.project_slug}}" / "uv-locks"
NAME = "lock-template"
# uv writes the project's normalised name; a slug may hold underscores.
PLACEHOLDER = "{{ cookiecutter.project_slug | replace('_', '-') }}"


def host_python(version: str) -> str | None:
    """``python<version>`` on PATH or installed by pyenv; None if neither."""
    found = shutil.which(f"python{version}")
    if found is None and shutil.which("pyenv"):
        root = subprocess.run(["pyenv", "root"], capture_output=True, text=True, check=True)
        versions = Path(root.stdout.strip()) / "versions"
        matches = sorted(versions.glob(f"{version}.*/bin/python{version}"))
        found = str(matches[-1]) if matches else None
    return found


def lock(version: str, upgrade: bool, workdir: Path) -> str:
    """The lock of a bake of ``version`` (starting from the template's), as a template."""
    project = Path(
        cookiecutter(
            str(REPO_ROOT),
            no_input=True,
            output_dir=str(workdir / version),
            extra_context={"project_name": NAME, "python_version": version},
        )
    )
    if not (project / "uv.lock").read_text(encoding="utf-8").strip():
        (project / "uv.lock").unlink()  # a new python_version: nothing to start from
    uv = str(Path(sys.executable).parent / "uv")
    env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never"}
    command = ["uv", "lock", *(["--upgrade"] if upgrade else [])]
    python = host_python(version)
    if python is not None:
        command = [uv, *command[1:], "--python", python]
    elif version in ROOTS:
        command = in_root(version, project, command, env, uv)
    else:
        raise SystemExit(f"python{version} is not installed")
    subprocess.run(command, cwd=project, env=env, check=True)
    text = (project / "uv.lock").read_text(encoding="utf-8")
    line = f'name = "{NAME}"\n'
    assert text.count(line) == 1, f"the project's entry is not the one line {line!r}"
    return text.replace(line, f'name = "{PLACEHOLDER}"\n')


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upgrade", action="store_true", help="take the newest releases")
    arguments = parser.parse_args()
    versions = json.loads((REPO_ROOT / "cookiecutter.json").read_text())["python_version"]
    LOCKS.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="update-locks-") as workdir:
        for version in versions:
            (LOCKS / f"py{version}.lock").touch()
            text = lock(version, arguments.upgrade, Path(workdir))
            (LOCKS / f"py{version}.lock").write_text(text, encoding="utf-8")
            print(f"{LOCKS.relative_to(REPO_ROOT)}/py{version}.lock")
    return 0


if __name__ == "__main__":
    sys.exit(main())
