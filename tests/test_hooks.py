"""Unit tests of the pre- and post-generation hooks' functions.

The hooks hold Jinja, so each test renders the hook source with cookiecutter's own
``StrictEnvironment`` and executes the result as a module (``main`` is not run: the
``if __name__ == "__main__"`` guard protects it).
"""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any

import pytest
from cookiecutter.environment import StrictEnvironment
from jinja2.exceptions import UndefinedError

from tests.helpers import OPTIONS, REPO_ROOT

HOOKS_DIR = REPO_ROOT / "hooks"
DERIVED_FIELDS = ("project_slug", "package_name", "__database_url")


def build_context(**overrides: str) -> dict[str, Any]:
    """Return the cookiecutter context: cookiecutter.json defaults plus ``overrides``.

    Choice variables take their first option; derived defaults (slug, package, database
    URL) are rendered like cookiecutter does, unless overridden. Overrides are used verbatim.
    """
    answers: dict[str, Any] = {}
    environment = StrictEnvironment(keep_trailing_newline=True)
    for key, default in OPTIONS.items():
        if key.startswith("_") and key != "__database_url":
            continue
        if key in overrides:
            answers[key] = overrides[key]
        elif isinstance(default, list):
            answers[key] = default[0]
        elif key in DERIVED_FIELDS:
            answers[key] = environment.from_string(default).render(cookiecutter=answers)
        else:
            answers[key] = default
    return {"cookiecutter": answers}


def load_hook(name: str, **overrides: str) -> types.ModuleType:
    """Render ``hooks/<name>.py`` for the given answers and execute it as a module."""
    source = (HOOKS_DIR / f"{name}.py").read_text(encoding="utf-8")
    context = build_context(**overrides)
    environment = StrictEnvironment(context=context, keep_trailing_newline=True)
    rendered = environment.from_string(source).render(**context)
    module = types.ModuleType(f"rendered_{name}")
    module.__file__ = str(HOOKS_DIR / f"{name}.py")
    exec(compile(rendered, module.__file__, "exec"), module.__dict__)
    return module


@pytest.fixture(scope="module")
def pre() -> types.ModuleType:
    return load_hook("pre_gen_project")


@pytest.fixture(scope="module")
def post() -> types.ModuleType:
    return load_hook("post_gen_project")


# --- the rendered hooks read answers exactly -------------------------------------------------

HOSTILE_VALUES = [
    "plain",
    'Bob\'s "Quoted" \\ Service',
    'three """ double quotes',
    "three ''' single quotes",
    "ends with ''''",
    'ends with """',
    "ends with a backslash \\",
    "\\",
    "\\\\\\",
    "\\'''",
    "\\n \\t \\u00e9 look like escapes",
    "real\nnewline and\ttab",
    "Café Ünïcode",
    "Сервис заказов",
    "订单服务",
    "emoji 🚀✨ and flag 🇩🇪",
    "</script><script>alert(1)</script> & <b>",
    "{{ cookiecutter.project_name }} {% raw %}",
    "\x7f DEL and \x00 NUL",
    "",
    "   ",
]
ANSWER_FIELDS = [
    "project_name",
    "project_slug",
    "package_name",
    "description",
    "author_name",
    "author_email",
]


@pytest.mark.parametrize("value", HOSTILE_VALUES)
@pytest.mark.parametrize("field", ANSWER_FIELDS)
def test_pre_gen_answers_round_trip_hostile_values_exactly(field: str, value: str) -> None:
    module = load_hook("pre_gen_project", **{field: value})
    assert module.ANSWERS[field] == value


def test_pre_gen_answers_hold_all_hostile_values_at_once() -> None:
    overrides = dict(zip(ANSWER_FIELDS, HOSTILE_VALUES[1:], strict=False))
    module = load_hook("pre_gen_project", **overrides)
    assert overrides == module.ANSWERS


def test_pre_gen_answers_default_to_the_cookiecutter_json_defaults(pre: types.ModuleType) -> None:
    assert pre.ANSWERS == {
        "project_name": "My Service",
        "project_slug": "my-service",
        "package_name": "my_service",
        "description": (
            "An async FastAPI service on SQLAlchemy 2.x that runs on SQLite or PostgreSQL."
        ),
        "author_name": "Your Name",
        "author_email": "you@example.com",
    }


@pytest.mark.parametrize("value", HOSTILE_VALUES)
@pytest.mark.parametrize(
    ("field", "constant"),
    [
        ("project_slug", "PROJECT_SLUG"),
        ("package_name", "PACKAGE_NAME"),
        ("database", "DATABASE"),
        ("__database_url", "DATABASE_URL"),
    ],
)
def test_post_gen_constants_round_trip_hostile_values_exactly(
    field: str, constant: str, value: str
) -> None:
    module = load_hook("post_gen_project", **{field: value})
    assert getattr(module, constant) == value


@pytest.mark.parametrize(
    ("database", "url"),
    [
        ("sqlite", "sqlite+aiosqlite:///./app.db"),
        ("postgresql", "postgresql+asyncpg://postgres:postgres@localhost:5432/my_service"),
    ],
)
def test_post_gen_database_url_follows_the_chosen_database(database: str, url: str) -> None:
    module = load_hook("post_gen_project", database=database)
    assert database == module.DATABASE
    assert url == module.DATABASE_URL


def test_post_gen_keeps_the_lock_of_the_chosen_python_as_uv_lock(
    post: types.ModuleType, tmp_path: Path
) -> None:
    locks = tmp_path / post.LOCKS
    locks.mkdir()
    for version in ("3.11", "3.12"):
        (locks / f"py{version}.lock").write_text(f"lock for {version}\n")
    assert post.select_lock(tmp_path, "3.12") == tmp_path / "uv.lock"
    assert (tmp_path / "uv.lock").read_text() == "lock for 3.12\n"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["uv.lock"]


def test_the_template_holds_a_lock_for_every_python_version() -> None:
    locks = REPO_ROOT / "{{cookiecutter.project_slug}}" / "uv-locks"
    assert sorted(path.name for path in locks.iterdir()) == sorted(
        f"py{version}.lock" for version in OPTIONS["python_version"]
    )


def test_post_gen_postgresql_url_names_the_package_as_database() -> None:
    module = load_hook("post_gen_project", database="postgresql", project_name="Order Desk")
    assert module.PACKAGE_NAME == "order_desk"
    assert module.DATABASE_URL.endswith("/order_desk")


def test_rendering_fails_loudly_on_an_unknown_variable() -> None:
    environment = StrictEnvironment(context=build_context())
    with pytest.raises(UndefinedError, match="nope"):
        environment.from_string("{{ cookiecutter.nope }}").render(**build_context())


# --- pre_gen_project: text_error -------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "My Service",
        "x",
        'Bob\'s "Quoted" \\ Service',
        "Café Ünïcode",
        "Сервис заказов",
        "emoji 🚀",
        " leading and trailing spaces ",
        "a" * 200,
        "é" * 200,
    ],
)
def test_text_error_accepts_one_plain_line(pre: types.ModuleType, value: str) -> None:
    assert pre.text_error("description", value) is None


@pytest.mark.parametrize("value", ["", " ", "   ", "\u3000" * 2, "\xa0"])
def test_text_error_rejects_empty_or_blank_text(pre: types.ModuleType, value: str) -> None:
    assert pre.text_error("project_name", value) == (
        "project_name is empty; give a short non-empty text"
    )


@pytest.mark.parametrize(
    "value",
    [
        "line one\nline two",
        "trailing newline\n",
        "carriage\rreturn",
        "tab\there",
        "NUL\x00",
        "escape \x1b[31m",
        "DEL \x7f",
        "\x01",
    ],
)
def test_text_error_rejects_control_characters(pre: types.ModuleType, value: str) -> None:
    error = pre.text_error("description", value)
    assert error is not None
    assert error.startswith(f"description {value!r} contains a control character")


@pytest.mark.parametrize("length", [201, 202, 1000])
def test_text_error_rejects_text_longer_than_200_characters(
    pre: types.ModuleType, length: int
) -> None:
    assert pre.text_error("author_name", "a" * length) == (
        f"author_name is {length} characters long; keep it to 200 or fewer"
    )


def test_text_error_reports_emptiness_before_anything_else(pre: types.ModuleType) -> None:
    assert "is empty" in pre.text_error("description", "\n" * 300)


# --- pre_gen_project: slug_error -------------------------------------------------------------


@pytest.mark.parametrize(
    "slug",
    ["my-service", "a", "a1", "my_service", "my-service-2", "x-y_z", "abc123", "a" * 40],
)
def test_slug_error_accepts_lowercase_kebab_or_snake_case(pre: types.ModuleType, slug: str) -> None:
    assert pre.slug_error(slug) is None


@pytest.mark.parametrize(
    "slug",
    [
        "",
        "My Service",
        "my service",
        "MyService",
        "1service",
        "-service",
        "_service",
        "service-",
        "service_",
        "my--service",
        "my__service",
        "my-_service",
        "my.service",
        "café",
        "a/b",
        "..",
        "my-service\n",
    ],
)
def test_slug_error_rejects_invalid_slugs(pre: types.ModuleType, slug: str) -> None:
    error = pre.slug_error(slug)
    assert error is not None
    assert error.startswith(f"project_slug {slug!r} is invalid;")


@pytest.mark.parametrize("length", [41, 42, 100])
def test_slug_error_rejects_slugs_longer_than_40_characters(
    pre: types.ModuleType, length: int
) -> None:
    slug = "a" * length
    assert pre.slug_error(slug) == (
        f"project_slug {slug!r} is {length} characters long; use at most 40"
    )


# --- pre_gen_project: package_error ----------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["my_service", "a", "a1", "service_2", "orders", "asyncio_service", "a__b", "a" * 40],
)
def test_package_error_accepts_lowercase_identifiers(pre: types.ModuleType, name: str) -> None:
    assert pre.package_error(name) is None


@pytest.mark.parametrize(
    "name",
    ["", "My_Service", "my-service", "my service", "1service", "_private", "café", "a.b", "a\n"],
)
def test_package_error_rejects_names_that_are_not_lowercase_identifiers(
    pre: types.ModuleType, name: str
) -> None:
    error = pre.package_error(name)
    assert error is not None
    assert error.startswith(f"package_name {name!r} is invalid;")


@pytest.mark.parametrize(
    "name", ["class", "def", "import", "async", "await", "lambda", "match", "case"]
)
def test_package_error_rejects_python_keyword(pre: types.ModuleType, name: str) -> None:
    assert pre.package_error(name) == (
        f"package_name {name!r} is a Python keyword; choose another name (e.g. '{name}_service')"
    )


@pytest.mark.parametrize(
    "name", ["asyncio", "json", "os", "sys", "typing", "logging", "email", "types", "collections"]
)
def test_package_error_rejects_standard_library_module(pre: types.ModuleType, name: str) -> None:
    error = pre.package_error(name)
    assert error is not None
    assert "shadows the standard-library module" in error
    assert f"'{name}_service'" in error


@pytest.mark.parametrize(
    "name",
    [
        "sqlalchemy",
        "fastapi",
        "alembic",
        "pydantic",
        "pydantic_settings",
        "starlette",
        "uvicorn",
        "asyncpg",
        "aiosqlite",
        "httpx",
        "pytest",
        "tests",
        "migrations",
    ],
)
def test_package_error_rejects_dependency_or_project_folder_name(
    pre: types.ModuleType, name: str
) -> None:
    error = pre.package_error(name)
    assert error is not None
    assert "shadows the import name of a dependency or project folder" in error


@pytest.mark.parametrize("length", [41, 42, 100])
def test_package_error_rejects_names_longer_than_40_characters(
    pre: types.ModuleType, length: int
) -> None:
    name = "a" * length
    assert pre.package_error(name) == (
        f"package_name {name!r} is {length} characters long; use at most 40"
    )


def test_every_keyword_and_soft_keyword_is_rejected(pre: types.ModuleType) -> None:
    import keyword

    names = [
        name
        for name in [*keyword.kwlist, *keyword.softkwlist]
        if pre.PACKAGE_PATTERN.fullmatch(name)
    ]
    assert names
    assert all(pre.package_error(name) is not None for name in names)


# --- pre_gen_project: email_error ------------------------------------------------------------


@pytest.mark.parametrize(
    "email",
    ["you@example.com", "a.b+tag@sub.example.co.uk", "x@y.io", "o'brien@example.com"],
)
def test_email_error_accepts_addresses(pre: types.ModuleType, email: str) -> None:
    assert pre.email_error(email) is None


@pytest.mark.parametrize(
    "email",
    [
        "",
        "not-an-email",
        "@example.com",
        "you@",
        "you@example",
        "you@@example.com",
        "you @example.com",
        "you@exam ple.com",
        "you@example.com\n",
        "you@example.",
        "a@b@c.com",
    ],
)
def test_email_error_rejects_non_addresses(pre: types.ModuleType, email: str) -> None:
    assert pre.email_error(email) == (
        f"author_email {email!r} is not an e-mail address; use the form 'name@example.com'"
    )


# --- pre_gen_project: find_errors and main ---------------------------------------------------

VALID_ANSWERS = {
    "project_name": "My Service",
    "project_slug": "my-service",
    "package_name": "my_service",
    "description": "A service.",
    "author_name": "Your Name",
    "author_email": "you@example.com",
}


def test_find_errors_returns_nothing_for_valid_answers(pre: types.ModuleType) -> None:
    assert pre.find_errors(VALID_ANSWERS) == []


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("project_name", "", "project_name is empty"),
        ("description", "a\nb", "description 'a\\nb' contains a control character"),
        ("author_name", "x" * 201, "author_name is 201 characters long"),
        ("project_slug", "Bad Slug", "project_slug 'Bad Slug' is invalid"),
        ("package_name", "json", "package_name 'json' shadows the standard-library module"),
        ("author_email", "nope", "author_email 'nope' is not an e-mail address"),
    ],
)
def test_find_errors_names_the_single_bad_field(
    pre: types.ModuleType, field: str, value: str, fragment: str
) -> None:
    errors = pre.find_errors({**VALID_ANSWERS, field: value})
    assert len(errors) == 1
    assert errors[0].startswith(fragment)


def test_find_errors_reports_every_bad_field_in_prompt_order(pre: types.ModuleType) -> None:
    answers = {
        "project_name": " ",
        "project_slug": "1-bad",
        "package_name": "class",
        "description": "tab\t",
        "author_name": "",
        "author_email": "nope",
    }
    errors = pre.find_errors(answers)
    assert [error.split(" ", 1)[0] for error in errors] == [
        "project_name",
        "description",
        "author_name",
        "project_slug",
        "package_name",
        "author_email",
    ]


def test_pre_gen_main_returns_0_and_prints_nothing_for_defaults(
    pre: types.ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    assert pre.main() == 0
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == ""


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"package_name": "class"}, ["package_name 'class' is a Python keyword"]),
        ({"package_name": "asyncio"}, ["package_name 'asyncio' shadows the standard-library"]),
        ({"package_name": "sqlalchemy"}, ["package_name 'sqlalchemy' shadows the import name"]),
        ({"package_name": "a" * 41}, [f"package_name '{'a' * 41}' is 41 characters long"]),
        ({"author_email": "bob"}, ["author_email 'bob' is not an e-mail address"]),
        (
            {"project_name": "123 Go"},
            [
                "project_slug '123-go' is invalid",
                "package_name '123_go' is invalid",
            ],
        ),
        (
            {"project_name": "", "description": "two\nlines"},
            [
                "project_name is empty",
                "description 'two\\nlines' contains a control character",
                "project_slug '_' is invalid",
                "package_name '_' is invalid",
            ],
        ),
    ],
)
def test_pre_gen_main_prints_one_error_line_per_bad_answer_and_returns_1(
    overrides: dict[str, str], expected: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    module = load_hook("pre_gen_project", **overrides)
    assert module.main() == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == len(expected)
    for line, fragment in zip(lines, expected, strict=True):
        assert line.startswith(f"ERROR: {fragment}")


def test_pre_gen_hook_source_is_not_run_on_import() -> None:
    module = load_hook("pre_gen_project", package_name="class")
    assert module.__name__ != "__main__"
    assert module.find_errors(module.ANSWERS)


# --- post_gen_project ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    ["sqlite+aiosqlite:///./app.db", "postgresql+asyncpg://u:p%40ss@db:5432/x"],
)
def test_env_text_sets_the_database_url_and_echo_off(post: types.ModuleType, url: str) -> None:
    text = post.env_text(url)
    settings = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert settings == [f"DATABASE_URL={url}", "DATABASE_ECHO=false"]
    assert text.endswith("\n")


def test_env_text_documents_both_database_forms(post: types.ModuleType) -> None:
    text = post.env_text("sqlite+aiosqlite:///./app.db")
    assert "#   sqlite+aiosqlite:///./app.db" in text
    assert "#   postgresql+asyncpg://" in text


def test_write_env_files_writes_env_and_example_when_env_is_absent(
    post: types.ModuleType, tmp_path: Path
) -> None:
    written = post.write_env_files(tmp_path, "sqlite+aiosqlite:///./app.db")
    assert written == [tmp_path / ".env.example", tmp_path / ".env"]
    expected = post.env_text("sqlite+aiosqlite:///./app.db")
    assert (tmp_path / ".env.example").read_text(encoding="utf-8") == expected
    assert (tmp_path / ".env").read_text(encoding="utf-8") == expected


def test_write_env_files_never_overwrites_an_existing_env(
    post: types.ModuleType, tmp_path: Path
) -> None:
    (tmp_path / ".env").write_text("DATABASE_URL=mine\n", encoding="utf-8")
    written = post.write_env_files(tmp_path, "sqlite+aiosqlite:///./app.db")
    assert written == [tmp_path / ".env.example"]
    assert (tmp_path / ".env").read_text(encoding="utf-8") == "DATABASE_URL=mine\n"
    assert "DATABASE_URL=sqlite+aiosqlite:///./app.db\n" in (tmp_path / ".env.example").read_text(
        encoding="utf-8"
    )


def test_write_env_files_always_refreshes_the_example(
    post: types.ModuleType, tmp_path: Path
) -> None:
    (tmp_path / ".env.example").write_text("stale\n", encoding="utf-8")
    post.write_env_files(tmp_path, "sqlite+aiosqlite:///./app.db")
    assert (tmp_path / ".env.example").read_text(encoding="utf-8") == post.env_text(
        "sqlite+aiosqlite:///./app.db"
    )


def test_next_steps_for_sqlite_skips_createdb(post: types.ModuleType) -> None:
    assert post.next_steps("my-service", "my_service", "sqlite") == (
        "Next steps:\n"
        "  cd my-service\n"
        "  uv sync\n"
        "  uv run alembic upgrade head\n"
        "  uv run uvicorn my_service.main:app --reload\n"
        "  uv run pytest --cov"
    )


def test_next_steps_for_postgresql_creates_the_database_second(post: types.ModuleType) -> None:
    lines = post.next_steps("order-desk", "order_desk", "postgresql").splitlines()
    assert lines[1] == "  cd order-desk"
    assert lines[2].startswith("  createdb order_desk")
    assert "  uv run uvicorn order_desk.main:app --reload" in lines


def give_locks(project_dir: Path, module: types.ModuleType) -> None:
    """The lock folder main() expects in a bake: one lock, the chosen Python's."""
    locks = project_dir / module.LOCKS
    locks.mkdir()
    (locks / f"py{module.PYTHON_VERSION}.lock").write_text("version = 1\n")


@pytest.mark.parametrize(
    ("database", "url"),
    [
        ("sqlite", "sqlite+aiosqlite:///./app.db"),
        ("postgresql", "postgresql+asyncpg://postgres:postgres@localhost:5432/order_desk"),
    ],
)
def test_post_gen_main_writes_env_files_and_prints_next_steps(
    database: str,
    url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    module = load_hook("post_gen_project", project_name="Order Desk", database=database)
    give_locks(tmp_path, module)
    monkeypatch.chdir(tmp_path)
    assert module.main() == 0
    expected = module.env_text(url)
    assert (tmp_path / ".env").read_text(encoding="utf-8") == expected
    assert (tmp_path / ".env.example").read_text(encoding="utf-8") == expected
    captured = capsys.readouterr()
    assert captured.out == module.next_steps("order-desk", "order_desk", database) + "\n"
    assert ("createdb order_desk" in captured.out) == (database == "postgresql")
    assert captured.err == ""


def test_post_gen_main_keeps_an_existing_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    module = load_hook("post_gen_project", database="postgresql")
    (tmp_path / ".env").write_text("DATABASE_URL=sqlite+aiosqlite:///./mine.db\n", encoding="utf-8")
    give_locks(tmp_path, module)
    monkeypatch.chdir(tmp_path)
    assert module.main() == 0
    assert (tmp_path / ".env").read_text(encoding="utf-8") == (
        "DATABASE_URL=sqlite+aiosqlite:///./mine.db\n"
    )
    assert "postgresql+asyncpg://" in (tmp_path / ".env.example").read_text(encoding="utf-8")
    assert "cd my-service" in capsys.readouterr().out


# --- the example domain --------------------------------------------------------------------

TEMPLATE_DIR = REPO_ROOT / "{{cookiecutter.project_slug}}"


def test_every_listed_domain_path_exists_in_the_template(post: types.ModuleType) -> None:
    missing = [
        pattern
        for patterns in post.DOMAIN_PATHS.values()
        for pattern in patterns
        if not (TEMPLATE_DIR / pattern.format(package="{{cookiecutter.package_name}}")).exists()
    ]
    assert missing == []


def test_every_meetings_path_of_the_template_is_listed(post: types.ModuleType) -> None:
    listed = [
        TEMPLATE_DIR / pattern.format(package="{{cookiecutter.package_name}}")
        for pattern in post.DOMAIN_PATHS["meetings"]
    ]
    unlisted = [
        str(path.relative_to(TEMPLATE_DIR))
        for path in TEMPLATE_DIR.rglob("*")
        if "meeting" in path.name and not any(path.is_relative_to(root) for root in listed)
    ]
    assert unlisted == []


@pytest.mark.parametrize(("chosen", "removed"), [("meetings", 0), ("none", 7)])
def test_unchosen_domain_paths_name_the_other_domains_files(
    post: types.ModuleType, chosen: str, removed: int
) -> None:
    paths = post.unchosen_domain_paths(Path("/project"), chosen, "order_desk")
    assert len(paths) == removed
    if removed:
        assert Path("/project/src/order_desk/meetings") in paths
        assert Path("/project/tests/meetings") in paths


def test_remove_paths_deletes_files_and_folders(post: types.ModuleType, tmp_path: Path) -> None:
    (tmp_path / "folder" / "inner").mkdir(parents=True)
    (tmp_path / "folder" / "inner" / "module.py").write_text("")
    (tmp_path / "file.py").write_text("")
    (tmp_path / "kept.py").write_text("")
    post.remove_paths([tmp_path / "folder", tmp_path / "file.py"])
    assert sorted(path.name for path in tmp_path.iterdir()) == ["kept.py"]


def test_remove_paths_fails_loudly_on_a_missing_path(
    post: types.ModuleType, tmp_path: Path
) -> None:
    with pytest.raises(FileNotFoundError):
        post.remove_paths([tmp_path / "not-there.py"])


def test_post_gen_main_removes_the_meetings_domain_when_none_is_chosen(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    module = load_hook("post_gen_project", example_domain="none", project_name="Order Desk")
    for path in module.unchosen_domain_paths(tmp_path, "none", "order_desk"):
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".py":
            path.write_text("")
        else:
            path.mkdir()
            (path / "models.py").write_text("")
    (tmp_path / "src" / "order_desk" / "main.py").write_text("")
    give_locks(tmp_path, module)
    monkeypatch.chdir(tmp_path)
    assert module.main() == 0
    capsys.readouterr()
    assert sorted(
        str(path.relative_to(tmp_path)) for path in tmp_path.rglob("*") if path.is_file()
    ) == [".env", ".env.example", "src/order_desk/main.py", "uv.lock"]
