"""Logging: one configuration for the service's and uvicorn's loggers, as text or JSON.

Every record carries the request id (``-`` outside a request), so that the access log line of
a request and everything logged while serving it can be found together.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Literal

from asgi_correlation_id import CorrelationIdFilter
from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

LogFormat = Literal["console", "json"]
HANDLER_NAME = "service"
CONSOLE_FORMAT = "%(asctime)s %(levelname)-8s [%(correlation_id)s] %(name)s: %(message)s"
JSON_FIELDS = "%(asctime)s %(levelname)s %(name)s %(correlation_id)s %(message)s"
# A request id taken from the client: up to 128 visible ASCII characters (UUIDs, ULIDs,
# trace ids); anything else is replaced by a new one.
REQUEST_ID = re.compile(r"[\x21-\x7e]{1,128}")


def is_valid_request_id(value: str) -> bool:
    """Whether a client's X-Request-ID can be used as it is."""
    return REQUEST_ID.fullmatch(value) is not None


def formatter(log_format: LogFormat) -> logging.Formatter:
    """One line per record: text for people, or one JSON object for a log pipeline."""
    if log_format == "console":
        return logging.Formatter(CONSOLE_FORMAT)
    return JsonFormatter(
        JSON_FIELDS,
        rename_fields={"asctime": "time", "levelname": "level", "correlation_id": "request_id"},
        # uvicorn adds a colored copy of some messages; one message is enough.
        reserved_attrs=[*RESERVED_ATTRS, "color_message"],
    )


def configure_logging(level: str, log_format: LogFormat, *, sql: bool = False) -> None:
    """Send every logger's records, uvicorn's included, to stdout in ``log_format``.

    ``sql`` logs every SQL statement (at INFO). Safe to call again: the handler it added
    before is replaced, any other is left alone.
    """
    handler = logging.StreamHandler(sys.stdout)
    handler.set_name(HANDLER_NAME)
    handler.addFilter(CorrelationIdFilter(default_value="-"))
    handler.setFormatter(formatter(log_format))
    root = logging.getLogger()
    for old in [old for old in root.handlers if old.get_name() == HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # uvicorn gives its loggers handlers and levels of their own: hand both to the root, so
    # that LOG_LEVEL decides. Except where uvicorn turned its access log off
    # (--no-access-log: no handler, no propagation): it stays off.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        turned_off = name == "uvicorn.access" and not logger.handlers and not logger.propagate
        logger.handlers.clear()
        logger.setLevel(logging.NOTSET)
        logger.propagate = not turned_off
    # SQLAlchemy's echo=True would add a handler of its own, in its own format.
    logging.getLogger("sqlalchemy.engine").setLevel(logging.INFO if sql else logging.WARNING)
