"""The pre-gen hook's re-run hint: after a refused answer, name the replay file and the command.

cookiecutter saves every answer to ``<replay_dir>/<template folder name>.json`` before the hook
runs. The unit tests render the hook with the ``_template``, ``_repo_dir`` and ``_checkout``
entries cookiecutter adds to the context (as tests/test_hooks.py renders it without them); the
end-to-end tests go through the cookiecutter CLI, correct the answer in the replay file and
generate again with the command the hook printed.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest
from cookiecutter.environment import StrictEnvironment

from tests.helpers import REPO_ROOT, clean_env
from tests.test_hooks import build_context

HOOK = REPO_ROOT / "hooks" / "pre_gen_project.py"
COOKIECUTTER = str(Path(sys.executable).with_name("cookiecutter"))


def load_pre_gen(**context: Any) -> types.ModuleType:
    """Render the pre-gen hook for the default answers plus ``context`` and execute it."""
    full = build_context()
    full["cookiecutter"].update(context)
    environment = StrictEnvironment(context=full, keep_trailing_newline=True)
    rendered = environment.from_string(HOOK.read_text(encoding="utf-8")).render(**full)
    module = types.ModuleType("rendered_pre_gen_project")
    module.__file__ = str(HOOK)
    exec(compile(rendered, module.__file__, "exec"), module.__dict__)
    return module


def write_replay(folder: Path, name: str, answers: dict[str, Any]) -> Path:
    """Write a replay file the way cookiecutter does; return its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    path.write_text(json.dumps({"cookiecutter": answers}, indent=2), encoding="utf-8")
    return path


@pytest.fixture
def pre() -> types.ModuleType:
    return load_pre_gen(_template="/templates/fastapi", _repo_dir="/templates/fastapi")


# --- the rendered constants ------------------------------------------------------------------

HOSTILE_PATHS = [
    "/plain/path",
    "gh:org/template",
    "https://github.com/org/template.git",
    "C:\\Users\\me\\templates\\fastapi",
    "\\\\server\\share\\",
    '/it\'s a "quoted" dir',
    "/ends with ''''",
    "/ends with a backslash\\",
    "/{{ cookiecutter.project_name }} {% raw %}",
    "/new\nline and\ttab",
    "/Café/服务/🚀",
    ".",
]


@pytest.mark.parametrize("path", HOSTILE_PATHS)
def test_template_repo_dir_and_checkout_round_trip_any_path_exactly(path: str) -> None:
    module = load_pre_gen(_template=path, _repo_dir=path, _checkout=path)
    rendered = (module.TEMPLATE, module.REPO_DIR, module.CHECKOUT)
    assert rendered == (path, path, path)


def test_constants_are_none_when_rendered_without_them_as_cruft_does() -> None:
    module = load_pre_gen()
    assert (module.TEMPLATE, module.REPO_DIR, module.CHECKOUT) == (None, None, None)


# --- rerun_command and replay_file_name ------------------------------------------------------


@pytest.mark.parametrize("path", HOSTILE_PATHS)
def test_rerun_command_splits_back_into_the_exact_arguments(
    pre: types.ModuleType, path: str
) -> None:
    command = pre.rerun_command(f"{path}/replay.json", path, None)
    assert shlex.split(command) == ["cookiecutter", "--replay-file", f"{path}/replay.json", path]


def test_rerun_command_keeps_the_checkout(pre: types.ModuleType) -> None:
    command = pre.rerun_command("/r/template.json", "gh:org/template", "v1.2")
    assert command == "cookiecutter --replay-file /r/template.json --checkout v1.2 gh:org/template"


@pytest.mark.parametrize(
    ("repo_dir", "name"),
    [
        ("/templates/fastapi", "fastapi.json"),
        ("/templates/fastapi/", "fastapi.json"),
        ("/home/me/.cookiecutters/template", "template.json"),
        ("templates/fastapi", "fastapi.json"),
        ("../fastapi", "fastapi.json"),
        (".", "<template folder name>.json"),
        ("..", "<template folder name>.json"),
    ],
)
def test_replay_file_name_is_the_template_folder_name(
    pre: types.ModuleType, repo_dir: str, name: str
) -> None:
    assert pre.replay_file_name(repo_dir) == name


# --- find_replay_file ------------------------------------------------------------------------

SAVED = {"package_name": "class", "_template": "/t/fastapi", "_repo_dir": "/t/fastapi"}


def test_find_replay_file_returns_the_file_holding_these_answers(
    pre: types.ModuleType, tmp_path: Path
) -> None:
    write_replay(tmp_path, "other", {**SAVED, "_repo_dir": "/t/other"})
    (tmp_path / "broken.json").write_text("{not json", encoding="utf-8")
    (tmp_path / "list.json").write_text("[1, 2]", encoding="utf-8")
    (tmp_path / "no-context.json").write_text("{}", encoding="utf-8")
    expected = write_replay(tmp_path, "fastapi", {**SAVED, "project_name": "Order Desk"})
    assert pre.find_replay_file(tmp_path, SAVED) == expected


def test_find_replay_file_prefers_the_newest_match(pre: types.ModuleType, tmp_path: Path) -> None:
    older = write_replay(tmp_path, "older", SAVED)
    newer = write_replay(tmp_path, "newer", SAVED)
    os.utime(older, (1_000_000, 1_000_000))
    assert pre.find_replay_file(tmp_path, SAVED) == newer


@pytest.mark.parametrize(
    "stored",
    [
        {**SAVED, "package_name": "klass"},
        {**SAVED, "_template": "gh:org/fastapi"},
        {key: value for key, value in SAVED.items() if key != "_repo_dir"},
    ],
)
def test_find_replay_file_ignores_other_answers(
    pre: types.ModuleType, tmp_path: Path, stored: dict[str, str]
) -> None:
    write_replay(tmp_path, "fastapi", stored)
    assert pre.find_replay_file(tmp_path, SAVED) is None


def test_find_replay_file_returns_none_without_the_folder(
    pre: types.ModuleType, tmp_path: Path
) -> None:
    assert pre.find_replay_file(tmp_path / "missing", SAVED) is None


# --- user_replay_dir ---------------------------------------------------------------------------


def test_user_replay_dir_reads_the_config_named_by_cookiecutter_config(
    pre: types.ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f"replay_dir: {json.dumps(str(tmp_path / 'replay'))}\n", encoding="utf-8")
    monkeypatch.setenv("COOKIECUTTER_CONFIG", str(config))
    assert pre.user_replay_dir() == tmp_path / "replay"


@pytest.mark.parametrize("content", [None, "replay_dir: [unclosed\n", "- a list\n"])
def test_user_replay_dir_is_none_for_a_missing_or_invalid_config(
    pre: types.ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: str | None
) -> None:
    config = tmp_path / "config.yaml"
    if content is not None:
        config.write_text(content, encoding="utf-8")
    monkeypatch.setenv("COOKIECUTTER_CONFIG", str(config))
    assert pre.user_replay_dir() is None


# --- replay_hint and main --------------------------------------------------------------------


def test_replay_hint_names_the_found_file_and_the_command(pre: types.ModuleType) -> None:
    hint = pre.replay_hint(Path("/r/my dir/fastapi.json"), "/t/fastapi", "/t/fastapi", None)
    assert hint == (
        "cookiecutter saved all your answers in '/r/my dir/fastapi.json'.\n"
        "Correct the answers named above in that file (and values derived from them there, "
        "such as the database name in __database_url), then generate again without typing "
        "the others:\n"
        "  cookiecutter --replay-file '/r/my dir/fastapi.json' /t/fastapi"
    )


def test_replay_hint_without_the_file_names_it_by_template_folder(pre: types.ModuleType) -> None:
    hint = pre.replay_hint(None, "/home/me/.cookiecutters/fastapi", "gh:org/fastapi", "v2")
    lines = hint.splitlines()
    assert lines[0] == (
        "cookiecutter saved all your answers in fastapi.json in the replay_dir of your "
        "cookiecutter config (default ~/.cookiecutter_replay/)."
    )
    assert lines[-1] == (
        "  cookiecutter --replay-file '<replay_dir>/fastapi.json' --checkout v2 gh:org/fastapi"
    )


def test_main_prints_the_errors_then_the_hint_naming_the_replay_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    module = load_pre_gen(package_name="class", _template="tpl", _repo_dir="tpl")
    config = tmp_path / "config.yaml"
    config.write_text(f"replay_dir: {json.dumps(str(tmp_path / 'replay'))}\n", encoding="utf-8")
    monkeypatch.setenv("COOKIECUTTER_CONFIG", str(config))
    saved = write_replay(
        tmp_path / "replay", "tpl", {**module.ANSWERS, "_template": "tpl", "_repo_dir": "tpl"}
    )
    assert module.main() == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert lines[0].startswith("ERROR: package_name 'class' is a Python keyword")
    assert lines[1] == f"cookiecutter saved all your answers in {saved}."
    assert lines[-1] == f"  cookiecutter --replay-file {saved} tpl"
    assert len(lines) == 4


def test_main_prints_no_hint_when_the_answers_are_valid(
    capsys: pytest.CaptureFixture[str],
) -> None:
    module = load_pre_gen(_template="tpl", _repo_dir="tpl")
    assert module.main() == 0
    assert capsys.readouterr() == ("", "")


def test_main_prints_only_the_errors_when_rendered_by_cruft(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # cruft passes _template and _commit but no _repo_dir, and saves no replay file.
    module = load_pre_gen(package_name="class", _template="/t/fastapi", _commit="abc")
    assert module.main() == 1
    assert capsys.readouterr().err.splitlines() == [
        "ERROR: package_name 'class' is a Python keyword; choose another name "
        "(e.g. 'class_service')"
    ]


# --- end to end through the cookiecutter CLI -------------------------------------------------


def cookiecutter_cli(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run the cookiecutter CLI of this environment; return the completed process."""
    return subprocess.run(
        [COOKIECUTTER, *args],
        cwd=cwd,
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture
def user_config(tmp_path: Path) -> Path:
    """A cookiecutter user config keeping replay files and clones under tmp_path."""
    config = tmp_path / "cookiecutter.yaml"
    config.write_text(
        f"replay_dir: {json.dumps(str(tmp_path / 'replay'))}\n"
        f"cookiecutters_dir: {json.dumps(str(tmp_path / 'cookiecutters'))}\n",
        encoding="utf-8",
    )
    return config


def test_refused_answer_is_corrected_in_the_replay_file_and_generated_again(
    tmp_path: Path, user_config: Path
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    env = {"COOKIECUTTER_CONFIG": str(user_config), "HOME": str(tmp_path / "home")}
    refused = cookiecutter_cli(
        [
            "--no-input",
            str(REPO_ROOT),
            "project_name=Order Desk",
            "package_name=class",
            "database=postgresql",
            "author_name=Ana O'Brien",
        ],
        cwd=work,
        **env,
    )
    assert refused.returncode != 0
    assert list(work.iterdir()) == []
    replay_file = tmp_path / "replay" / f"{REPO_ROOT.name}.json"
    command = f"cookiecutter --replay-file {shlex.quote(str(replay_file))} {REPO_ROOT}"
    errors = refused.stderr.splitlines()
    assert errors[0].startswith("ERROR: package_name 'class' is a Python keyword")
    assert errors[1] == f"cookiecutter saved all your answers in {shlex.quote(str(replay_file))}."
    assert errors[-1] == f"  {command}"

    saved = json.loads(replay_file.read_text(encoding="utf-8"))
    answers = saved["cookiecutter"]
    assert answers["package_name"] == "class"
    assert answers["__database_url"].endswith("/class")
    answers["package_name"] = "order_desk_api"
    answers["__database_url"] = answers["__database_url"].removesuffix("/class") + "/order_desk_api"
    replay_file.write_text(json.dumps(saved), encoding="utf-8")

    args = shlex.split(command)
    assert args[0] == "cookiecutter"
    cookiecutter_cli(args[1:], cwd=work, **env).check_returncode()
    project = work / "order-desk"
    assert (project / "src" / "order_desk_api" / "__init__.py").is_file()
    assert (
        "DATABASE_URL=postgresql+asyncpg://postgres:postgres@localhost:5432/order_desk_api\n"
        in (project / ".env").read_text(encoding="utf-8")
    )
    assert "Ana O'Brien" in (project / "pyproject.toml").read_text(encoding="utf-8")


def test_refusal_under_a_config_file_option_names_the_replay_file_by_template_folder(
    tmp_path: Path, user_config: Path
) -> None:
    # The hook cannot see --config-file; it finds only the config cookiecutter finds without it.
    home = tmp_path / "home"
    refused = cookiecutter_cli(
        ["--config-file", str(user_config), "--no-input", str(REPO_ROOT), "package_name=class"],
        cwd=tmp_path,
        HOME=str(home),
    )
    assert refused.returncode != 0
    assert (tmp_path / "replay" / f"{REPO_ROOT.name}.json").is_file()
    assert refused.stderr.splitlines()[1:2] == [
        f"cookiecutter saved all your answers in {REPO_ROOT.name}.json in the replay_dir of "
        "your cookiecutter config (default ~/.cookiecutter_replay/)."
    ]
    assert not home.exists()
