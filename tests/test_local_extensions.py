"""Unit tests of the template's Jinja filters in ``local_extensions.py``."""

from __future__ import annotations

import ast
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest
from cookiecutter.environment import StrictEnvironment

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from local_extensions import py_string, quoted  # noqa: E402

HOSTILE_VALUES = [
    "",
    "plain text",
    'Bob\'s "Quoted" \\ Service',
    'triple """ double quotes',
    "triple ''' single quotes",
    "trailing backslash \\",
    "\\",
    "\\\\",
    '"',
    "'",
    "\\n is not a newline",
    "\\u00e9 is not an escape",
    "Café Ünïcode",
    "Сервис заказов",
    "订单服务",
    "サービス",
    "emoji 🚀✨🐍",
    "flag 🇩🇪 and family 👨‍👩‍👧",
    "DEL \x7f char",
    "NUL \x00 char",
    "newline\nand\rcarriage return",
    "tab\tand\x0bvertical tab\x0cform feed",
    "escape \x1b[31m red",
    "bell \x07 and backspace \x08",
    "C1 \x80\x9f controls",
    "latin-1 ÿ and nbsp \xa0",
    "zero width \u200b joiner \u200d",
    "BOM \ufeff",
    "line separator \u2028 paragraph \u2029",
    "right-to-left \u202e override",
    "max BMP \uffff",
    "astral \U0001f600 \U0010ffff",
    "{{ cookiecutter.project_name }}",
    "{% raw %}",
    "# not a comment",
    "= not = an = assignment",
    "[table]",
    "${HOME} $(whoami) `id`",
]


@pytest.mark.parametrize("value", HOSTILE_VALUES)
def test_quoted_round_trips_through_tomllib(value: str) -> None:
    assert tomllib.loads(f"x = {quoted(value)}")["x"] == value


@pytest.mark.parametrize("value", HOSTILE_VALUES)
def test_quoted_is_a_single_line_basic_string(value: str) -> None:
    text = quoted(value)
    assert text.startswith('"')
    assert text.endswith('"')
    assert "\n" not in text
    assert "\r" not in text


@pytest.mark.parametrize("value", HOSTILE_VALUES)
def test_quoted_round_trips_as_an_inline_table_value(value: str) -> None:
    document = f"authors = [{{ name = {quoted(value)}, email = {quoted(value)} }}]"
    assert tomllib.loads(document)["authors"] == [{"name": value, "email": value}]


@pytest.mark.parametrize("value", ["emoji 🚀", "astral \U0010ffff", "😀"])
def test_quoted_keeps_astral_characters_raw_instead_of_surrogate_escapes(value: str) -> None:
    text = quoted(value)
    assert "\\ud8" not in text.lower()
    assert value[-1] in text


def test_quoted_escapes_del_which_toml_forbids_raw() -> None:
    assert quoted("\x7f") == '"\\u007f"'


@pytest.mark.parametrize(
    ("value", "expected"),
    [(42, "42"), (None, "None"), (True, "True"), (3.5, "3.5")],
)
def test_quoted_stringifies_non_string_values(value: object, expected: str) -> None:
    assert tomllib.loads(f"x = {quoted(value)}")["x"] == expected


@pytest.mark.parametrize("value", HOSTILE_VALUES)
def test_py_string_round_trips_through_literal_eval(value: str) -> None:
    assert ast.literal_eval(py_string(value)) == value


@pytest.mark.parametrize("value", HOSTILE_VALUES)
def test_py_string_is_ascii_only(value: str) -> None:
    assert py_string(value).isascii()


@pytest.mark.parametrize("value", HOSTILE_VALUES)
def test_py_string_has_no_raw_control_characters(value: str) -> None:
    assert all(32 <= ord(char) < 127 for char in py_string(value))


@pytest.mark.parametrize("value", HOSTILE_VALUES)
def test_py_string_compiles_as_an_assignment(value: str) -> None:
    namespace: dict[str, object] = {}
    exec(compile(f"x = {py_string(value)}\n", "<py_string>", "exec"), namespace)
    assert namespace["x"] == value


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", '""'),
        ("abc", '"abc"'),
        ('"', "'\"'"),
        ("\\", '"\\\\"'),
        ("'", '"\'"'),
        ("é", '"\\xe9"'),
        ("\x7f", '"\\x7f"'),
        ("\n", '"\\x0a"'),
        ("Ж", '"\\u0416"'),
        ("ж", '"\\u0436"'),
        ("\uffff", '"\\uffff"'),
        ("🚀", '"\\U0001f680"'),
    ],
)
def test_py_string_uses_lowercase_escapes_of_the_shortest_form(value: str, expected: str) -> None:
    assert py_string(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [(42, "42"), (None, "None"), (False, "False")],
)
def test_py_string_stringifies_non_string_values(value: object, expected: str) -> None:
    assert ast.literal_eval(py_string(value)) == expected


@pytest.mark.parametrize(
    ("extension", "name", "function"),
    [("QuotedFilter", "quoted", quoted), ("PyStringFilter", "py_string", py_string)],
)
def test_filters_load_through_extensions_under_their_function_names(
    extension: str, name: str, function: Callable[[object], str]
) -> None:
    context = {"cookiecutter": {"_extensions": [f"local_extensions.{extension}"]}}
    environment = StrictEnvironment(context=context)
    assert environment.filters[name] is function
    rendered = environment.from_string("{{ value | " + name + " }}").render(value='a"b')
    assert rendered == function('a"b')
