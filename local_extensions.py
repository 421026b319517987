"""Jinja filters for the template (cookiecutter loads them through ``_extensions``)."""

from __future__ import annotations

import json

from cookiecutter.utils import simple_filter


def quoted(value: object) -> str:
    """Return ``value`` as a double-quoted TOML basic string."""
    # ensure_ascii=False keeps characters outside the BMP intact: their \\ud83d-style
    # surrogate escapes are invalid TOML. DEL is the one control character JSON leaves raw.
    return json.dumps(str(value), ensure_ascii=False).replace("\x7f", "\\u007f")


def py_string(value: object) -> str:
    """Return ``value`` as an ASCII-only Python string literal in the form ``ruff format`` keeps.

    Non-ASCII characters become lowercase escapes, so the rendered file is lint-clean whatever
    the answer holds (no confusable-character warnings). Like the formatter, it uses double
    quotes unless the text holds more double than single quotes.
    """
    text = str(value)
    quote = "'" if text.count('"') > text.count("'") else '"'
    parts = []
    for char in text:
        code = ord(char)
        if char in ("\\", quote):
            parts.append("\\" + char)
        elif 32 <= code < 127:
            parts.append(char)
        elif code <= 0xFF:
            parts.append(f"\\x{code:02x}")
        elif code <= 0xFFFF:
            parts.append(f"\\u{code:04x}")
        else:
            parts.append(f"\\U{code:08x}")
    return quote + "".join(parts) + quote


QuotedFilter = simple_filter(quoted)
PyStringFilter = simple_filter(py_string)
