"""Configuration: file and environment, errors that say exactly what is wrong, secrets kept secret."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters.cli import main
from adapters.settings import ConfigFileError, load_settings


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[platform]\nbase_url = "http://sim:1"\nclient_id = "a"\n[kafka]\nbootstrap = "k:9092"\n')
    monkeypatch.setenv("CAMPAIGN_FSM_KAFKA__BOOTSTRAP", "other:9093")
    monkeypatch.setenv("CAMPAIGN_FSM_DISPATCH__CAPACITY_RATIO", "0.7")
    settings = load_settings(path)
    assert settings.platform.url == "http://sim:1" and settings.platform.client_id == "a"
    assert settings.kafka.bootstrap == "other:9093"
    assert settings.orchestrator_config().preflight.capacity_ratio == 0.7


def test_errors_name_every_bad_field(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text('{"dispatch": {"capacity_ratio": 7}, "kafka": {"security_protocol": "SASL_SSL"}, "colour": 1}')
    with pytest.raises(ConfigFileError) as caught:
        load_settings(path)
    text = str(caught.value)
    assert "dispatch.capacity_ratio" in text and "sasl_mechanism" in text and "colour" in text


def test_windows_given_for_one_dialer_type_keep_the_others_defaults(tmp_path: Path) -> None:
    from schemas.types import CampaignState, DialerType

    path = tmp_path / "c.json"
    path.write_text('{"windows": {"predictive": {"starting": 1, "pausing": 2, "stopping": 3}}}')
    windows = load_settings(path).tolerance_windows()
    assert windows.window(DialerType.PREDICTIVE, CampaignState.STOPPING) == 3
    assert windows.window(DialerType.PROGRESSIVE, CampaignState.STOPPING) == 60


def test_unreadable_or_invalid_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigFileError, match="cannot read"):
        load_settings(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[platform\n")
    with pytest.raises(ConfigFileError, match="not valid TOML"):
        load_settings(bad)


def test_secrets_never_show(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAMPAIGN_FSM_PLATFORM__CLIENT_SECRET", "s3cr3t-value")
    monkeypatch.setenv("CAMPAIGN_FSM_AUTH__KEYS__ops", "an-hmac-key-of-enough-bytes")
    settings = load_settings()
    assert "s3cr3t-value" not in repr(settings) and "an-hmac-key" not in repr(settings)
    authority = settings.command_authority()
    assert authority is not None and authority.key_ids == {"ops"}
    assert "an-hmac-key" not in repr(authority)


def test_a_short_key_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAMPAIGN_FSM_AUTH__KEYS__ops", "short")
    with pytest.raises(ConfigFileError) as caught:
        load_settings()
    assert "ops" in str(caught.value) and "short" not in str(caught.value).replace("too short", "")


def test_a_key_id_no_command_could_carry_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "a-shared-secret-of-32-characters"
    monkeypatch.setenv("CAMPAIGN_FSM_AUTH__KEYS__bad id!", secret)
    with pytest.raises(ConfigFileError) as caught:
        load_settings()
    assert "bad id!" in str(caught.value) and "not valid" in str(caught.value)
    assert secret not in str(caught.value), "the key itself is never quoted"


def test_config_check_says_what_is_missing(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CAMPAIGN_FSM_CONFIG", raising=False)
    assert main(["config", "check"]) == 1
    err = capsys.readouterr().err
    assert "base_url or platform.region" in err and "client_id is empty" in err
    monkeypatch.setenv("CAMPAIGN_FSM_PLATFORM__REGION", "mypurecloud.ie")
    monkeypatch.setenv("CAMPAIGN_FSM_PLATFORM__CLIENT_ID", "id")
    monkeypatch.setenv("CAMPAIGN_FSM_PLATFORM__CLIENT_SECRET", "secret")
    assert main(["config", "check"]) == 0
    assert "https://api.mypurecloud.ie" in capsys.readouterr().out


def test_one_tolerance_window_can_be_set_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    from schemas.types import CampaignState, DialerType

    monkeypatch.setenv("CAMPAIGN_FSM_WINDOWS__PREDICTIVE__STOPPING", "240")
    windows = load_settings().tolerance_windows()
    assert windows.window(DialerType.PREDICTIVE, CampaignState.STOPPING) == 240
    assert windows.window(DialerType.PREDICTIVE, CampaignState.PAUSING) == 180, "the rest keep their defaults"
    assert windows.window(DialerType.PROGRESSIVE, CampaignState.STOPPING) == 60


def test_an_unknown_dialer_type_window_is_named(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text('{"windows": {"AGENTLESS": {"starting": 1, "pausing": 1, "stopping": 1}}}')
    with pytest.raises(ConfigFileError, match="AGENTLESS"):
        load_settings(path)


def test_notification_channels_are_shared_within_twenty_per_oauth_client(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CAMPAIGN_FSM_CONFIG", raising=False)
    monkeypatch.setenv("CAMPAIGN_FSM_PLATFORM__BASE_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("CAMPAIGN_FSM_PLATFORM__CLIENT_ID", "id")
    monkeypatch.setenv("CAMPAIGN_FSM_PLATFORM__CLIENT_SECRET", "secret")
    assert load_settings().notification_channels() == 19  # and one more while a channel is renewed
    monkeypatch.setenv("CAMPAIGN_FSM_PLATFORM__INSTANCES", "3")
    assert load_settings().notification_channels() == 5  # 3 x (5 + 1) = 18, within the cap
    assert main(["config", "check"]) == 0
    assert "warning" not in capsys.readouterr().err
    monkeypatch.setenv("CAMPAIGN_FSM_PLATFORM__MAX_CHANNELS", "8")
    assert load_settings().notification_channels() == 8
    assert main(["config", "check"]) == 0  # a warning, not an error: the operator may know better
    err = capsys.readouterr().err
    assert "3 instances x (8 notification channels + 1 being renewed) = 27 > 20" in err
    monkeypatch.setenv("CAMPAIGN_FSM_PLATFORM__MAX_CHANNELS", "21")
    with pytest.raises(ConfigFileError):
        load_settings()
