"""Settings: DATABASE_URL normalisation and rejection, secrets kept out of sight."""

from __future__ import annotations

from pathlib import Path

import pytest

from {{ cookiecutter.package_name }}.core.config import (
    ConfigurationError,
    Settings,
    get_settings,
    normalise_database_url,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("postgres://u:p@db:5432/app", "postgresql+asyncpg://u:p@db:5432/app"),
        ("postgresql://u:p@db/app", "postgresql+asyncpg://u:p@db/app"),
        ("postgresql+psycopg2://u:p@db/app", "postgresql+asyncpg://u:p@db/app"),
        # psycopg 3 is not refused as blocking: every PostgreSQL URL runs on asyncpg.
        ("postgresql+psycopg://u:p@db/app", "postgresql+asyncpg://u:p@db/app"),
        ("postgresql+asyncpg://u:p@db/app", "postgresql+asyncpg://u:p@db/app"),
        ("sqlite:///./app.db", "sqlite+aiosqlite:///./app.db"),
        ("sqlite+pysqlite:///./app.db", "sqlite+aiosqlite:///./app.db"),
        ("sqlite://", "sqlite+aiosqlite://"),
        ("sqlite+aiosqlite:///:memory:", "sqlite+aiosqlite:///:memory:"),
        # Paths stay exactly as written (pydantic's AnyUrl would rewrite this one).
        ("sqlite+aiosqlite:///../data/dev.db", "sqlite+aiosqlite:///../data/dev.db"),
        ("sqlite+aiosqlite:////var/lib/app/app.db", "sqlite+aiosqlite:////var/lib/app/app.db"),
        # Query strings and escaped passwords survive.
        (
            "postgres://u:p%40ss%25w@db/app?ssl=require",
            "postgresql+asyncpg://u:p%40ss%25w@db/app?ssl=require",
        ),
        ("  postgres://u@db/app  ", "postgresql+asyncpg://u@db/app"),
    ],
)
def test_normalise_database_url_rewrites_to_the_async_driver(raw: str, expected: str) -> None:
    assert normalise_database_url(raw) == expected


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("not a url", "not a database URL"),
        ("", "not a database URL"),
        ("mysql+aiomysql://u:p@db/app", "unsupported database 'mysql'"),
        ("oracle://u:p@db/app", "unsupported database 'oracle'"),
        ("postgresql+pg8000://u:p@db/app", "driver 'pg8000'"),
        ("sqlite+pysqlcipher:///x.db", "driver 'pysqlcipher'"),
    ],
)
def test_normalise_database_url_rejects_unknown_or_blocking_drivers(raw: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        normalise_database_url(raw)


@pytest.mark.parametrize(
    "raw",
    [
        "postgresql://svc:hunter2@db:70000/app",
        "postgresql+asyncpg://svc:hunter2@db:65536/app",
        "postgres://svc:hunter2@db:99999999999999999999/app",
    ],
)
def test_a_port_outside_0_to_65535_is_refused_in_one_line(raw: str) -> None:
    # Otherwise every connection attempt raises OverflowError: a 500 on every request.
    with pytest.raises(ValueError, match=r"port .* outside 0-65535") as caught:
        normalise_database_url(raw)
    assert "\n" not in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_ports_0_and_65535_are_kept() -> None:
    for port in (0, 65535):
        url = f"postgresql+asyncpg://u@db:{port}/app"
        assert normalise_database_url(url) == url


@pytest.mark.parametrize(
    "raw",
    [
        "postgresql://svc:Secret@hunter2@db.example.com/app",
        "postgres://svc:@hunter2@db/app",
        "postgresql+asyncpg://svc:Secret@hunter2:w@db:5432/app",
    ],
)
def test_an_unencoded_at_sign_in_the_password_is_refused_without_showing_it(raw: str) -> None:
    # make_url splits at the last "@", so the password's own "@" would move the rest of the
    # password into the host name and the service would connect somewhere else.
    with pytest.raises(ValueError, match=r"percent-encode .*%40") as caught:
        normalise_database_url(raw)
    message = str(caught.value)
    assert "\n" not in message
    assert "Secret" not in message
    assert "hunter2" not in message


def test_an_encoded_at_sign_in_the_password_is_kept() -> None:
    url = normalise_database_url("postgres://svc:Secret%40hunter2@db/app")
    assert url == "postgresql+asyncpg://svc:Secret%40hunter2@db/app"


def test_settings_normalise_the_url_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgres://svc:secret@db:5432/app")
    settings = Settings(_env_file=None)
    assert settings.database_url.get_secret_value() == "postgresql+asyncpg://svc:secret@db:5432/app"
    assert settings.sqlalchemy_url.drivername == "postgresql+asyncpg"


def test_settings_read_the_dotenv_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    env_file = tmp_path / ".env"
    env_file.write_text("DATABASE_URL=sqlite:///./from-dotenv.db\nDATABASE_ECHO=true\n")
    settings = Settings(_env_file=env_file)
    assert settings.database_url.get_secret_value() == "sqlite+aiosqlite:///./from-dotenv.db"
    assert settings.database_echo is True


def test_settings_default_to_the_database_chosen_at_generation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    settings = Settings(_env_file=None)
    default = Settings.model_fields["database_url"].default
    assert settings.database_url.get_secret_value() == normalise_database_url(default)
    assert settings.sqlalchemy_url.get_backend_name() == "{{ cookiecutter.database }}"


def test_settings_never_show_the_database_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://svc:hunter2-secret@db/app")
    settings = Settings(_env_file=None)
    shown = [
        repr(settings),
        str(settings),
        repr(settings.sqlalchemy_url),
        str(settings.sqlalchemy_url),
    ]
    assert all("hunter2-secret" not in text for text in shown)
    assert "hunter2-secret" in settings.database_url.get_secret_value()


def test_get_settings_explains_a_bad_url_in_one_line_without_the_password(
    environ: pytest.MonkeyPatch,
) -> None:
    environ.setenv("DATABASE_URL", "mysql://svc:hunter2-secret@db/app")
    with pytest.raises(ConfigurationError) as caught:
        get_settings()
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(
        "invalid settings: DATABASE_URL names the unsupported database 'mysql'"
    )
    assert "hunter2-secret" not in message


def test_get_settings_names_every_bad_setting(environ: pytest.MonkeyPatch) -> None:
    environ.setenv("DATABASE_URL", "sqlite:///./ok.db")
    environ.setenv("DATABASE_POOL_SIZE", "0")
    with pytest.raises(
        ConfigurationError, match=r"DATABASE_POOL_SIZE: .*greater than or equal to 1"
    ):
        get_settings()


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("-1", "greater than or equal to 0"),
        ("inf", "less than or equal to 86400"),
        ("soon", "number"),
    ],
)
def test_a_bad_time_limit_is_named_in_one_line(
    environ: pytest.MonkeyPatch, value: str, reason: str
) -> None:
    environ.setenv("DATABASE_URL", "sqlite:///./ok.db")
    environ.setenv("DATABASE_READ_STATEMENT_TIMEOUT", value)
    with pytest.raises(ConfigurationError, match=rf"DATABASE_READ_STATEMENT_TIMEOUT: .*{reason}"):
        get_settings()
