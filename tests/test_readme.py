"""The READMEs' Quick start commands, followed literally: they must generate, serve and test."""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import asyncpg
import pytest

from tests.helpers import (
    HOST_PYTHON,
    REPO_ROOT,
    HostCookies,
    PostgresServer,
    clean_env,
    copy_tracked_files,
    host_interpreter,
    run,
    tool,
    uv_env,
)
from tests.python_root import in_root

TEMPLATE_README = REPO_ROOT / "README.md"
CI_SCRIPT = REPO_ROOT / ".ci" / "run"
# Where the template is published, as the README writes it for a reader to fill in.
PUBLISHED_SOURCE = "gh:<org>/<repo>"
COOKIECUTTER = "cookiecutter>=2.7,<3"
HEALTH_TIMEOUT = 300.0
DEFAULT_PYTHON = json.loads((REPO_ROOT / "cookiecutter.json").read_text())["python_version"][0]
# The README's way to generate for the Python at hand, where uv cannot download the default.
FOR_THE_PYTHON_AT_HAND = re.compile(
    r"`(\.venv/bin/cookiecutter --no-input -o \.\. \.) python_version=3\.11`"
)


def quick_start_blocks(markdown: str) -> list[str]:
    """The ```bash code blocks of the ``## Quick start`` section, stripped, in order."""
    match = re.search(r"^## Quick start[ \t]*\n(.*?)(?=^## |\Z)", markdown, re.M | re.S)
    assert match, "no '## Quick start' section"
    blocks = re.findall(r"^```bash[ \t]*\n(.*?)^```[ \t]*$", match.group(1), re.M | re.S)
    return [block.strip() for block in blocks]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _log_tail(log: Path, size: int = 6000) -> str:
    return log.read_text(encoding="utf-8", errors="replace")[-size:] if log.exists() else ""


def _get_ready(port: int) -> tuple[int, str] | None:
    """``(status, body)`` of ``GET /readyz``, or None while nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read().decode(errors="replace")
    except (urllib.error.URLError, OSError):
        return None


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Terminate the whole process group of ``process`` (SIGTERM, then SIGKILL)."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=15)
    # Children (uvicorn) may outlive the shell that started them.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=15)


def serve_until_ready(command: str | list[str], cwd: Path, env: dict[str, str], port: int) -> dict:
    """Run ``command`` (a shell line, or a command, that ends serving on ``port``) until
    /readyz says ok.

    Fails early if the command exits, and with the log's tail on any failure; the whole
    process group is killed afterwards in every case. Returns the readiness JSON.
    """
    log = cwd / f"serve-{port}.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            command,
            shell=isinstance(command, str),
            cwd=cwd,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + HEALTH_TIMEOUT
            last: tuple[int, str] | None = None
            while time.monotonic() < deadline:
                if process.poll() is not None:
                    pytest.fail(
                        f"{command!r} exited {process.returncode} before /readyz answered\n"
                        f"--- log tail\n{_log_tail(log)}",
                        pytrace=False,
                    )
                last = _get_ready(port)
                if last is not None and last[0] == 200:
                    body = json.loads(last[1])
                    assert body.get("status") == "ok", f"/readyz said {body!r}"
                    return body
                time.sleep(1)
            pytest.fail(
                f"/readyz on port {port} did not answer 200 within {HEALTH_TIMEOUT:.0f} s "
                f"(last answer: {last!r})\n--- log tail\n{_log_tail(log)}",
                pytrace=False,
            )
        finally:
            _stop(process)


def test_ci_runs_the_readme_test_command() -> None:
    blocks = quick_start_blocks(TEMPLATE_README.read_text(encoding="utf-8"))
    assert len(blocks) == 2, blocks
    test_command = blocks[1]
    assert "\n" not in test_command, test_command
    ci_lines = [line.strip() for line in CI_SCRIPT.read_text(encoding="utf-8").splitlines()]
    assert test_command in ci_lines, f"{CI_SCRIPT} does not run {test_command!r}"


def test_quick_start_keeps_the_published_form_beside_the_clone_form() -> None:
    readme = TEMPLATE_README.read_text(encoding="utf-8")
    section = re.search(r"^## Quick start[ \t]*\n(.*?)(?=^## |\Z)", readme, re.M | re.S)
    assert section is not None
    published = re.findall(r"^```sh[ \t]*\n(.*?)^```[ \t]*$", section.group(1), re.M | re.S)
    assert len(published) == 1, published
    assert published[0].startswith(f'uvx --from "{COOKIECUTTER}" cookiecutter '), published[0]
    assert PUBLISHED_SOURCE in published[0]
    # Both end by serving the same app.
    assert published[0].strip().endswith(quick_start_blocks(readme)[0].split(" run ")[-1])


def quick_start_readme() -> tuple[str, str]:
    """The first command of the template's quick start, and the same for the Python at hand
    (as the README says to write it where uv cannot download the default Python)."""
    readme = TEMPLATE_README.read_text(encoding="utf-8")
    blocks = quick_start_blocks(readme)
    assert len(blocks) == 2, blocks
    command = blocks[0]
    assert "gh:" not in command, command
    at_hand = FOR_THE_PYTHON_AT_HAND.search(readme)
    assert at_hand is not None, "the README does not say how to generate for another Python"
    assert f" {at_hand.group(1)} " in command, command
    return command, command.replace(
        at_hand.group(1), f"{at_hand.group(1)} python_version={HOST_PYTHON}"
    )


def serve_quick_start(command: str, folder: Path, python: str | None) -> Path:
    """Run the quick start ``command`` in a fresh copy of the repository in ``folder``, with
    Python alone (no uv anywhere, no Python download) until its service is ready; the root of
    ``python`` (tests/python_root.py) is the machine when given. Returns the project."""
    clone = folder / "template"
    copy_tracked_files(clone)
    port = free_port()
    env = clean_env(UVICORN_PORT=str(port), UV_PYTHON_DOWNLOADS="never")
    if python is None:
        assert shutil.which("uv", path=env["PATH"]) is None
        serve_until_ready(command, clone, env, port)
    else:
        inside = ["sh", "-c", f"cd template && {command}"]
        extra = {"UVICORN_PORT": str(port)}
        machine = in_root(python, folder, inside, env, tool("uv"), extra, uv_on_path=False)
        serve_until_ready(machine, clone, env, port)
    project = folder / "my-service"
    assert project.is_dir(), sorted(p.name for p in folder.iterdir())
    assert (project / "app.db").is_file(), "`alembic upgrade head` did not create app.db"
    return project


def venv_python(project: Path) -> str:
    """The Python version of the project's ``.venv``, as ``X.Y``."""
    config = (project / ".venv" / "pyvenv.cfg").read_text(encoding="utf-8")
    match = re.search(r"^version_info = (\d+\.\d+)\.", config, re.M)
    assert match is not None, config
    return match.group(1)


@pytest.mark.slow
def test_template_quick_start_from_a_fresh_clone_generates_and_serves_a_working_service(
    tmp_path: Path,
) -> None:
    # As written, on a machine with Python and nothing else: here, where the host lacks the
    # default Python, its Debian root is that machine (it has no uv either). The service's
    # suite, the generated README's second command, is the default bake's, which
    # tests/test_github.py runs with that Python on both databases.
    command, _ = quick_start_readme()
    in_a_root = host_interpreter(DEFAULT_PYTHON) is None
    project = serve_quick_start(command, tmp_path, DEFAULT_PYTHON if in_a_root else None)
    assert (project / ".python-version").read_text() == f"{DEFAULT_PYTHON}\n"
    assert venv_python(project) == DEFAULT_PYTHON


@pytest.mark.slow
def test_template_quick_start_for_the_python_at_hand_needs_no_download(tmp_path: Path) -> None:
    # Where uv may not download the default Python: the README's variant, with this host's
    # Python (3.11 here, the oldest offered) and nothing else.
    # Its suite is that of tests/test_bake.py's meetings-sqlite bake of this Python.
    _, command = quick_start_readme()
    project = serve_quick_start(command, tmp_path, None)
    assert venv_python(project) == HOST_PYTHON


@contextlib.contextmanager
def download_source() -> Iterator[tuple[str, list[str]]]:
    """A local stand-in for uv's Python download source: its URL, and the paths asked of it
    (each answered 404, so that nothing is installed)."""
    asked: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            self.send_error(404)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/releases", asked
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_quick_start_on_a_machine_without_the_default_python_gets_it_from_uv(
    cookies_session: Any, tmp_path: Path
) -> None:
    # What the README promises where the default Python is missing: uv (downloads allowed, as
    # they are unless turned off) asks for that CPython. The only Pythons it may find are the
    # one running these tests, so the default is missing even where the host has it
    # elsewhere. No network here: a local server stands in for the download source.
    result = cookies_session.bake(extra_context={"project_name": "Needs Download"})
    assert result.exit_code == 0, result.exception
    project = Path(result.project_path)
    with download_source() as (url, asked):
        env = {
            key: value for key, value in clean_env().items() if not key.startswith(("UV_", "PYENV"))
        }
        env |= {
            "PATH": str(Path(sys.base_prefix) / "bin"),
            "UV_PYTHON_INSTALL_MIRROR": url,
            "UV_PYTHON_INSTALL_DIR": str(tmp_path / "pythons"),
            "UV_CACHE_DIR": str(tmp_path / "uv-cache"),
        }
        synced = subprocess.run(
            [tool("uv"), "sync"], cwd=project, env=env, capture_output=True, text=True, timeout=120
        )
    assert synced.returncode != 0, synced.stderr
    wanted = re.escape(f"/cpython-{DEFAULT_PYTHON}.")
    assert [path for path in asked if re.search(wanted, path.replace("%2B", "+"))], (
        asked,
        synced.stderr,
    )


@pytest.mark.slow
def test_generated_readme_pip_route_installs_migrates_and_tests(
    host_cookies: HostCookies, tmp_path: Path
) -> None:
    # The system's Python and pip: a bake for that Python.
    result = host_cookies.bake(extra_context={"project_name": "Pip Route"})
    assert result.exit_code == 0, result.exception
    project = Path(result.project_path)
    blocks = quick_start_blocks((project / "README.md").read_text(encoding="utf-8"))
    assert len(blocks) == 3, blocks
    assert "--group dev" in blocks[2]
    # Python and pip from the system, not from the test's own environment.
    output = run(blocks[2], cwd=project, env=clean_env())
    assert "Required test coverage of 95" in output.stdout
    assert (project / "app.db").is_file(), "`alembic upgrade head` did not create app.db"

    # Its pre-commit hooks run with the environment pip made, with no uv anywhere...
    env = clean_env(PRE_COMMIT_HOME=str(tmp_path / "pre-commit"))
    assert shutil.which("uv", path=env["PATH"]) is None
    run(["git", "init", "-q"], cwd=project, env=env)
    run(["git", "add", "-A"], cwd=project, env=env)
    pre_commit = [".venv/bin/pre-commit", "run", "--all-files", "--show-diff-on-failure"]
    checked = run(pre_commit, cwd=project, env=env)
    for hook in ("ruff check", "ruff format", "mypy --strict", "no merge conflict markers"):
        assert re.search(rf"^{re.escape(hook)}\.+Passed$", checked.stdout, re.M), checked.stdout
    # ...and refuse a commit with the conflict markers `cruft update` can leave behind.
    readme = project / "README.md"
    conflict = "<<<<<<< ours\nmine\n=======\ntheirs\n>>>>>>> theirs\n"
    readme.write_text(readme.read_text(encoding="utf-8") + conflict, encoding="utf-8")
    run(["git", "add", "README.md"], cwd=project, env=env)
    refused = subprocess.run(pre_commit, cwd=project, env=env, capture_output=True, text=True)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert re.search(r"^no merge conflict markers\.+Failed$", refused.stdout, re.M), refused.stdout
    assert "README.md:" in refused.stdout


async def _has_alembic_version(dsn_kwargs: dict[str, object]) -> bool:
    """Whether the database has Alembic's ``alembic_version`` table (the template ships no
    revisions, so the table is there but empty after ``alembic upgrade head``)."""
    connection = await asyncpg.connect(**dsn_kwargs, timeout=5)
    try:
        return bool(await connection.fetchval("SELECT to_regclass('public.alembic_version')"))
    finally:
        await connection.close()


@pytest.mark.slow
def test_generated_readme_quick_start_on_postgresql(
    tmp_path: Path, postgres: PostgresServer
) -> None:
    from cookiecutter.main import cookiecutter

    output = tmp_path / "out"
    project = Path(
        cookiecutter(
            str(REPO_ROOT),
            no_input=True,
            output_dir=str(output),
            extra_context={
                "project_name": f"Readme Pg {uuid4().hex[:6]}",
                "database": "postgresql",
                # served by uv with this host's Python (no download)
                "python_version": HOST_PYTHON,
            },
        )
    )
    package_name = project.name.replace("-", "_")
    assert (project / "src" / package_name / "main.py").is_file()
    env_file = (project / ".env").read_text(encoding="utf-8")
    assert f"localhost:5432/{package_name}" in env_file, env_file

    blocks = quick_start_blocks((project / "README.md").read_text(encoding="utf-8"))
    assert len(blocks) == 3, blocks

    postgres.create_database(name=package_name)
    try:
        port = free_port()
        serve_until_ready(blocks[0], project, uv_env(UVICORN_PORT=str(port)), port)

        has_table = asyncio.run(
            _has_alembic_version(
                {
                    "host": postgres.url.host,
                    "port": postgres.url.port or 5432,
                    "user": postgres.url.username,
                    "password": postgres.url.password,
                    "database": package_name,
                }
            )
        )
        assert has_table, "`alembic upgrade head` did not create alembic_version"
        # blocks[1], the tests, is the same command as in the SQLite quick start above, and
        # test_bake.py runs this combination's suite on both databases.
        assert blocks[1] == "uv run pytest --cov"
    finally:
        postgres.drop_database(package_name)
