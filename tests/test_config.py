"""Settings from the environment: the variable names, their defaults, the production posture, and a bad value
stopping the start with a line that names its variable."""

from __future__ import annotations

import pytest

from graphql_api.config import Settings

VARIABLES = ("PORT", "RERUN_LEASE_SECONDS", "CORS_ORIGINS", "ENVIRONMENT", "INTROSPECTION", "GRAPHIQL", "RUN_WORKERS",
             "MAX_DEPTH", "LOG_LEVEL", "LOG_FORMAT", "DATABASE_URL", "GEMINI_API_KEY", "PERSISTED_QUERIES")


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_unset_and_empty_variables_give_the_defaults(env: pytest.MonkeyPatch) -> None:
    env.setenv("DATABASE_URL", "")
    settings = Settings.from_env()
    assert (settings.database_url, settings.host, settings.port, settings.lease_s) == (None, "127.0.0.1", 8000, 30.0)
    assert (settings.environment, settings.production, settings.introspection, settings.graphiql) == ("development", False, True, True)
    assert settings.cors_origins == () and settings.persisted_queries == "auto" and settings.log_format == "text"


def test_variables_are_read_by_their_names(env: pytest.MonkeyPatch) -> None:
    env.setenv("PORT", "9001")
    env.setenv("RERUN_LEASE_SECONDS", "2.5")
    env.setenv("CORS_ORIGINS", "https://app.example.com, https://admin.example.com,")
    env.setenv("RUN_WORKERS", "off")
    env.setenv("MAX_DEPTH", "0")  # under the floor: the strictest value allowed
    env.setenv("LOG_LEVEL", "debug")
    env.setenv("LOG_FORMAT", "JSON")
    settings = Settings.from_env()
    assert (settings.port, settings.lease_s, settings.run_workers, settings.max_depth) == (9001, 2.5, False, 2)
    assert settings.cors_origins == ("https://app.example.com", "https://admin.example.com")
    assert (settings.log_level, settings.log_format) == ("DEBUG", "json")


def test_production_turns_introspection_and_graphiql_off_unless_set(env: pytest.MonkeyPatch) -> None:
    env.setenv("ENVIRONMENT", "Production")
    settings = Settings.from_env()
    assert settings.production and (settings.introspection, settings.graphiql) == (False, False)
    env.setenv("INTROSPECTION", "true")
    assert (Settings.from_env().introspection, Settings.from_env().graphiql) == (True, False)
    assert Settings(environment="production").graphiql is False


@pytest.mark.parametrize("name, value", [("PORT", "eighty"), ("RUN_WORKERS", "maybe"), ("ENVIRONMENT", "staging"),
                                         ("PERSISTED_QUERIES", "sometimes"), ("LOG_LEVEL", "loud"),
                                         ("RERUN_LEASE_SECONDS", "soon")])
def test_a_bad_value_stops_the_start_naming_its_variable(env: pytest.MonkeyPatch, name: str, value: str) -> None:
    env.setenv(name, value)
    with pytest.raises(SystemExit) as stopped:
        Settings.from_env()
    assert str(stopped.value).startswith(f"{name}: ") and repr(value) in str(stopped.value)


def test_settings_built_in_code_ignore_the_environment(env: pytest.MonkeyPatch) -> None:
    env.setenv("GEMINI_API_KEY", "from-the-shell")
    env.setenv("ENVIRONMENT", "production")
    settings = Settings(database_url="postgresql://db", lease_s=3)
    assert (settings.gemini_api_key, settings.environment, settings.lease_s) == (None, "development", 3.0)
    assert settings.model_copy(update={"run_workers": False}).run_workers is False
