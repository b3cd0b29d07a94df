"""One typed settings model: defaults from the contract, lists, and clear errors."""

from __future__ import annotations

import pytest

from calltrail_common.settings import Settings, SettingsError, load_settings


def test_contract_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DATABASE_URL", "AMQP_URL", "VAPI_WEBHOOK_SECRET", "INGEST_PORT", "SPOOL_DIR"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings(_env_file=None)
    assert settings.database_url == "postgresql://postgres@127.0.0.1:5432/calltrail"
    assert settings.amqp_url.get_secret_value() == "amqp://guest:guest@127.0.0.1:5672/"
    assert settings.ingest_port == 8000 and settings.api_port == 8001
    assert settings.ingest_max_body_bytes == 4_194_304
    assert settings.webhook_secrets() == ()
    assert settings.public_base_url == "http://localhost:8000"


def test_webhook_secret_is_a_comma_separated_rotation_list(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VAPI_WEBHOOK_SECRET", "new-one, old-one,")
    assert Settings(_env_file=None).webhook_secrets() == (b"new-one", b"old-one")
    assert "new-one" not in repr(Settings(_env_file=None))  # secrets never print


def test_invalid_values_give_one_clear_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INGEST_PORT", "eighty")
    monkeypatch.setenv("LOG_FORMAT", "XML")
    with pytest.raises(SettingsError) as error:
        load_settings()
    assert "INGEST_PORT" in str(error.value) and "LOG_FORMAT" in str(error.value)


def test_env_example_documents_every_setting_and_nothing_else() -> None:
    from pathlib import Path

    example = Path(__file__).resolve().parents[2] / ".env.example"
    documented = {line.split("=", 1)[0].strip() for line in example.read_text().splitlines()
                  if line.strip() and not line.lstrip().startswith("#")}
    assert documented == {name.upper() for name in Settings.model_fields}
