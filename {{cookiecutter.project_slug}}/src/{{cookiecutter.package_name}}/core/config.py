"""Settings: read once from the environment and ``.env``, validated in one place."""

from __future__ import annotations

from functools import cache
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

# The one async driver each supported database runs on, and the driver names that are
# rewritten to it. Any other driver would block the event loop or is not installed.
ASYNC_DRIVERS = {"postgresql": "asyncpg", "sqlite": "aiosqlite"}
REWRITTEN_DRIVERS = {
    "postgresql": {"", "asyncpg", "psycopg", "psycopg2"},
    "sqlite": {"", "pysqlite", "aiosqlite"},
}
BACKEND_ALIASES = {"postgres": "postgresql"}
# What make_url raises for text that is not a URL, or a port that is not a number. (A name,
# not a parenthesised tuple in the except clause: ruff's formatter drops the parentheses for
# Python 3.14 targets and keeps them for older ones.)
URL_ERRORS = (ArgumentError, ValueError)
EXAMPLE_URLS = "sqlite+aiosqlite:///./app.db or postgresql+asyncpg://user:password@host:5432/dbname"


class ConfigurationError(RuntimeError):
    """The settings cannot start the service; the message is one line and holds no secret."""


def normalise_database_url(raw: str, setting: str = "DATABASE_URL") -> str:
    """Return ``raw`` rewritten to its async driver, or raise ValueError saying why it cannot be.

    ``postgres://``, ``postgresql://``, ``postgresql+psycopg://`` and ``postgresql+psycopg2://`` become
    ``postgresql+asyncpg://`` (SQLAlchemy 2.1 reads a bare ``postgresql://`` as psycopg 3);
    ``sqlite://`` becomes ``sqlite+aiosqlite://``. The URL is parsed with ``make_url`` and kept
    as a string, so paths such as ``sqlite+aiosqlite:///../data/dev.db`` stay as written.
    """
    try:
        url = make_url(raw.strip())
    except URL_ERRORS:
        raise ValueError(
            f"{setting} is not a database URL; expected e.g. {EXAMPLE_URLS} "
            "(percent-encode '@', ':' and '/' in the password as %40, %3A and %2F)"
        ) from None
    if "@" in (url.host or ""):
        # make_url splits at the last "@": the password's own "@" moved the rest of it into
        # the host name.
        raise ValueError(
            f"{setting} has an '@' in its password; percent-encode it as %40 "
            "(and ':' as %3A, '/' as %2F)"
        )
    if url.port is not None and not 0 <= url.port <= 65535:
        # Otherwise every connection attempt raises OverflowError (not a connection error).
        raise ValueError(f"{setting} has the port {url.port}, outside 0-65535; fix the port")
    backend, _, driver = url.drivername.partition("+")
    backend = BACKEND_ALIASES.get(backend, backend)
    if backend not in ASYNC_DRIVERS:
        raise ValueError(
            f"{setting} names the unsupported database {backend!r}; "
            f"use SQLite or PostgreSQL, e.g. {EXAMPLE_URLS}"
        )
    async_driver = ASYNC_DRIVERS[backend]
    if driver not in REWRITTEN_DRIVERS[backend]:
        raise ValueError(
            f"{setting} uses the driver {driver!r}, which this service cannot run without "
            f"blocking the event loop; use {backend}+{async_driver}://"
        )
    # Only the scheme changes: the rest stays byte for byte as written.
    rest = raw.strip()[len(url.drivername) :]
    return f"{backend}+{async_driver}{rest}"


class Settings(BaseSettings):
    """Service settings; each field reads the environment variable of the same name."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    # The title of the API docs, and the name of the service's PostgreSQL connections.
    app_name: str = Field(
        default={{ cookiecutter.project_name | py_string }},
    )
    # SecretStr keeps the password out of reprs, logs and error messages.
    # Defaults to the database chosen when the project was generated.
    database_url: SecretStr = Field(
        default="{{ cookiecutter.__database_url }}",
        validate_default=True,
    )
    # Every SQL statement in the log, at INFO.
    database_echo: bool = False
    # Connection pool (PostgreSQL and SQLite files; in-memory SQLite shares one connection).
    # Overflow connections are closed whenever they come back to a full pool, which under
    # steady load above the pool size means a new connection every few requests; so the
    # default is one pool of 15 (opened as needed, then kept) and no overflow.
    database_pool_size: int = Field(default=15, ge=1)
    database_max_overflow: int = Field(default=0, ge=0)
    database_pool_timeout: float = Field(default=30.0, gt=0)
    database_pool_recycle: int = Field(default=1800, ge=-1)
    # Check a pooled PostgreSQL connection before use: locally, plus a round trip if it
    # idled longer than DATABASE_POOL_PING_AFTER seconds (see core/database/engine.py).
    # Not SQLAlchemy's pool_pre_ping, which makes three round trips on every checkout.
    database_pool_check_connections: bool = True
    database_pool_ping_after: float = Field(default=30.0, ge=0)
    # Behind PgBouncer in transaction pooling mode: no prepared statement may outlive a
    # transaction, since the next one may run on another server connection.
    database_pgbouncer: bool = False
    # Time limits of the requests' database calls on PostgreSQL, in seconds (0: none). The
    # server cancels a statement that runs longer (503); the client gives up a second later
    # on a server that does not answer at all (a frozen one), and on connecting. A read
    # on a replica gets the shorter limit, then is retried on the primary. Migrations and
    # session_scope() (scripts, jobs) have no such limit.
    database_statement_timeout: float = Field(default=30.0, ge=0, le=86_400)
    database_read_statement_timeout: float = Field(default=2.0, ge=0, le=86_400)
    # How long a SQLite connection waits for another writer before "database is locked".
    database_sqlite_busy_timeout_ms: int = Field(default=5000, ge=0)
    # Migrations on PostgreSQL, in seconds (0: no limit). How long a statement may wait for a
    # lock: while an ALTER TABLE waits, every query of that table queues behind it, so it
    # gives up early and the migration is retried later. And how long a statement may run.
    # A migration that needs longer raises them for itself (see migrations/script.py.mako).
    database_migration_lock_timeout: float = Field(default=3.0, ge=0)
    database_migration_statement_timeout: float = Field(default=60.0, ge=0)

    # PostgreSQL streaming replicas to read from, comma-separated URLs (see
    # core/database/replicas.py). Unset, or with SQLite, every read goes to DATABASE_URL.
    database_read_url: SecretStr | None = None
    # A replica known to lag further behind the primary (seconds) gets no reads until it
    # catches up.
    database_read_max_lag: float = Field(default=5.0, gt=0)
    # Request bodies over this many bytes are refused with 413 before they are read whole.
    max_request_body_bytes: int = Field(default=16 * 1024 * 1024, ge=0)
    # Logging: DEBUG, INFO, WARNING, ERROR; "console" for people, "json" (one object per
    # line) for a log pipeline.
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    log_format: Literal["console", "json"] = "console"
    # Prometheus metrics (core/metrics.py) on this port, beside the API's; unset: none. With
    # several workers, each takes the next free port from here on.
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    # Browser origins allowed to call the API, comma-separated (e.g.
    # "https://app.example.com,http://localhost:5173"). Empty: no CORS headers at all.
    cors_origins: Annotated[list[str], NoDecode] = []

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_case_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value

    @field_validator("database_url", mode="after")
    @classmethod
    def _normalise_database_url(cls, value: SecretStr) -> SecretStr:
        return SecretStr(normalise_database_url(value.get_secret_value()))

    @field_validator("database_read_url", mode="after")
    @classmethod
    def _normalise_read_urls(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        urls = [
            normalise_database_url(raw, "DATABASE_READ_URL")
            for raw in value.get_secret_value().split(",")
        ]
        if any(not url.startswith("postgresql+") for url in urls):
            raise ValueError("DATABASE_READ_URL must name PostgreSQL servers (streaming replicas)")
        return SecretStr(",".join(urls))

    @property
    def sqlalchemy_url(self) -> URL:
        """The database URL as a SQLAlchemy ``URL`` (its repr masks the password)."""
        return make_url(self.database_url.get_secret_value())

    @property
    def read_urls(self) -> list[URL]:
        """The replicas to read from: none unless both they and DATABASE_URL are PostgreSQL."""
        if self.database_read_url is None or self.sqlalchemy_url.get_backend_name() != "postgresql":
            return []
        return [make_url(url) for url in self.database_read_url.get_secret_value().split(",")]


def describe_validation_error(error: ValidationError) -> str:
    """Summarise ``error`` in one line that names each bad setting but never its value."""
    problems = []
    for item in error.errors(include_input=False, include_url=False):
        field = ".".join(str(part) for part in item["loc"]).upper()
        reason = str(item.get("ctx", {}).get("error", item["msg"]))
        problems.append(reason if reason.startswith(field) else f"{field}: {reason}")
    return "invalid settings: " + "; ".join(problems)


@cache
def get_settings() -> Settings:
    """Return the settings, loaded once; raise ConfigurationError if they are invalid."""
    try:
        return Settings()
    except ValidationError as error:
        raise ConfigurationError(describe_validation_error(error)) from None


def settings_or_exit() -> Settings:
    """The settings, or exit with a one-line reason: for the service and Alembic at start-up."""
    try:
        return get_settings()
    except ConfigurationError as error:
        raise SystemExit(f"{{ cookiecutter.package_name }}: {error}") from None
