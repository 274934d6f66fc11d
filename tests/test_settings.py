"""Settings: the names the README documents, `.env`, and one clear line when something is wrong."""

from __future__ import annotations

import subprocess
import sys

import pytest

from worker.settings import ConfigError, Settings, load_settings
from worker.signing import generate_secret


def run_cli(args: list[str], env: dict[str, str], cwd) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "worker.cli.main", *args], env={"PATH": "/usr/bin:/bin", **env},
                          cwd=cwd, capture_output=True, text=True, timeout=60)


def test_defaults_match_the_design(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    for name in Settings.model_fields:
        monkeypatch.delenv(name, raising=False)
    settings = load_settings()
    assert settings.DATABASE_URL == "sqlite+aiosqlite:///./dodo-worker.db"
    assert settings.DODO_PAYMENTS_ENVIRONMENT == "test_mode"
    assert (settings.PORT, settings.MAX_ATTEMPTS, settings.RETRY_BASE_SECONDS) == (8000, 8, 5.0)
    assert settings.handler_modules == []  # no catalog here, nothing named: nothing to import
    assert settings.HOOKS_ALLOW_PRIVATE_NETWORKS is False
    assert settings.HOOKS_ALLOW_HTTP is False  # hook bodies carry licence keys: https only
    assert settings.webhook_secrets == []


def test_several_secrets_separated_by_commas_or_spaces(monkeypatch) -> None:
    a, b, c = generate_secret(), generate_secret(), generate_secret()
    monkeypatch.setenv("DODO_PAYMENTS_WEBHOOK_KEY", f"{a}, {b}  {c}")
    assert load_settings().webhook_secrets == [a, b, c]


def test_dotenv_is_read(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("MAX_ATTEMPTS=3\nPORT=9001\n")
    settings = load_settings()
    assert (settings.MAX_ATTEMPTS, settings.PORT) == (3, 9001)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [("MAX_ATTEMPTS", "many", "MAX_ATTEMPTS"), ("PORT", "99999", "PORT"),
     ("DODO_PAYMENTS_WEBHOOK_KEY", "whsec_!!!notbase64", "not whsec_ followed by standard base64"),
     ("DODO_PAYMENTS_ENVIRONMENT", "prod", "DODO_PAYMENTS_ENVIRONMENT")],
)
def test_malformed_settings_are_one_clear_line_without_the_value(monkeypatch, name, value, message) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    text = str(caught.value)
    assert message in text and "\n" not in text
    assert value not in text or name == "PORT"


def test_web_refuses_to_start_without_a_webhook_secret(tmp_path) -> None:
    result = run_cli(["web"], {"REDIS_URL": "redis://127.0.0.1:1/0"}, tmp_path)
    assert result.returncode == 2
    assert "DODO_PAYMENTS_WEBHOOK_KEY is not set" in result.stderr
    assert len(result.stderr.strip().splitlines()) <= 2


def test_a_malformed_secret_stops_the_process_without_echoing_it(tmp_path) -> None:
    secret = "whsec_short"
    result = run_cli(["web"], {"DODO_PAYMENTS_WEBHOOK_KEY": secret, "REDIS_URL": "redis://127.0.0.1:1/0"}, tmp_path)
    assert result.returncode == 2
    assert "configuration error: DODO_PAYMENTS_WEBHOOK_KEY" in result.stderr
    assert secret not in result.stderr
