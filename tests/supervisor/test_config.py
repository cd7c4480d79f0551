"""supervisor.config: defaults, TASKVISOR_* overrides, bad values named."""

from __future__ import annotations

import math

import pytest

from comms.framing import DEFAULT_MAX_LINE
from supervisor.cli import _parser
from supervisor.config import SupervisorConfig, settings


def test_defaults_without_environment():
    config = SupervisorConfig.from_env({})
    assert config == SupervisorConfig()
    assert config.heartbeat_interval == 5.0
    assert config.max_line == DEFAULT_MAX_LINE


def test_environment_variables_override_each_setting():
    config = SupervisorConfig.from_env(
        {
            "TASKVISOR_HEARTBEAT_INTERVAL": "0.5",
            "TASKVISOR_KILL_GRACE": "2",
            "TASKVISOR_MAX_LINE": "1024",
            "UNRELATED": "x",
        }
    )
    assert config.heartbeat_interval == 0.5
    assert config.kill_grace == 2.0
    assert config.max_line == 1024
    assert isinstance(config.max_line, int)
    assert config.heartbeat_tolerance == SupervisorConfig().heartbeat_tolerance


def test_every_setting_has_an_environment_variable():
    names = list(SupervisorConfig.__struct_fields__)
    environ = {f"TASKVISOR_{name.upper()}": "7" for name in names}
    config = SupervisorConfig.from_env(environ)
    assert all(getattr(config, name) == 7 for name in names)


def test_reads_os_environ_by_default(monkeypatch):
    monkeypatch.setenv("TASKVISOR_OVERTIME", "3")
    assert SupervisorConfig.from_env().overtime == 3.0


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("TASKVISOR_HEARTBEAT_INTERVAL", "fast", "a number of seconds"),
        ("TASKVISOR_MAX_LINE", "1.5", "an integer"),
        ("TASKVISOR_KILL_GRACE", "0", "> 0"),
        ("TASKVISOR_API_TIMEOUT", "-1", "> 0"),
        ("TASKVISOR_HEARTBEAT_TOLERANCE", "nan", "> 0"),
    ],
)
def test_bad_value_names_the_variable_and_what_was_expected(name, value, expected):
    with pytest.raises(ValueError) as info:
        SupervisorConfig.from_env({name: value})
    assert name in str(info.value)
    assert repr(value) in str(info.value)
    assert expected in str(info.value)


@pytest.mark.parametrize("value", ["inf", "Infinity", "1e999"])
def test_infinite_durations_are_refused(value):
    # threading.Event.wait(inf) raises OverflowError: the heartbeat thread would die silently.
    with pytest.raises(ValueError) as info:
        SupervisorConfig.from_env({"TASKVISOR_HEARTBEAT_INTERVAL": value})
    assert "TASKVISOR_HEARTBEAT_INTERVAL" in str(info.value)


def test_overrides_change_only_the_given_settings():
    config = SupervisorConfig().with_overrides(heartbeat_interval=1.0, kill_grace=None)
    assert config.heartbeat_interval == 1.0
    assert config.kill_grace == SupervisorConfig().kill_grace
    assert not math.isnan(config.overtime)


def test_config_is_immutable():
    with pytest.raises(AttributeError):
        SupervisorConfig().kill_grace = 1.0  # type: ignore[misc]


def test_taskvisor_variables_that_name_no_setting_are_reported():
    environ = {
        "TASKVISOR_HEARTBEAT_INTERVL": "1",
        "TASKVISOR_KILL_GRACE": "2",
        "TASKVISOR_A": "x",
        "HEARTBEAT_INTERVAL": "3",
    }
    assert SupervisorConfig.unknown_env_names(environ) == [
        "TASKVISOR_A",
        "TASKVISOR_HEARTBEAT_INTERVL",
    ]


def test_every_setting_is_declared_once_and_has_a_flag_and_an_environment_variable():
    flags = {action.dest: action.option_strings for action in _parser()._actions}
    for setting in settings():
        assert flags[setting.name] == [setting.flag]
        assert setting.env == f"TASKVISOR_{setting.name.upper()}"
        assert setting.help
    assert [s.name for s in settings()] == list(SupervisorConfig.__struct_fields__)


def test_a_flag_overrides_the_environment_through_the_same_parser():
    args = _parser().parse_args(["a.json", "--kill-grace", "1.5", "--max-line", "4096"])
    config = SupervisorConfig.from_env({"TASKVISOR_KILL_GRACE": "9"}).with_overrides(
        **{s.name: getattr(args, s.name) for s in settings()}
    )

    assert config.kill_grace == 1.5
    assert config.max_line == 4096
    assert config.overtime == SupervisorConfig().overtime


@pytest.mark.parametrize("value", ["0", "-1", "nan", "1.5"])
def test_a_bad_max_line_flag_is_a_usage_error_naming_the_flag(value, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _parser().parse_args(["a.json", "--max-line", value])

    assert exit_info.value.code == 2
    assert "--max-line" in capsys.readouterr().err
