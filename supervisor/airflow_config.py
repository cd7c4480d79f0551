"""What Airflow's worker reads from its configuration, read the same way, without Airflow.

To run an ``ExecuteTask`` workload (:mod:`comms.workload`), Airflow 3.3's worker takes a few
settings from its configuration: the Execution API server's URL
(``airflow.executors.base_executor.get_execution_api_server_url``), the folder the workload's
relative ``log_path`` is joined under (``airflow.sdk.log.init_log_file``), and where DAG
bundles are (``DagBundlesManager``, ``LocalDagBundle``). :func:`read_airflow_settings` reads
them as Airflow 3.3.2 does, without importing it (~1.5 s and ~100 MB that ``supervise`` does
not pay once per try):

* ``AIRFLOW_HOME`` (default ``~/airflow``) and ``AIRFLOW_CONFIG`` (default
  ``$AIRFLOW_HOME/airflow.cfg``); a missing file means Airflow's defaults;
* per option: the variable ``AIRFLOW__{SECTION}__{KEY}``, then the deprecated name's variable
  (``[workers] execution_api_server_url``, ``[webserver] base_url``), then ``airflow.cfg``
  (new name, then deprecated), then Airflow's default. ``airflow.cfg`` is read by
  :mod:`configparser` configured as Airflow's: option names keep their case (``DAGS_FOLDER``
  is not ``dags_folder``), ``%%`` and ``%(name)s`` are interpolated, ``[DEFAULT]`` applies;
* every value, default included, has ``$VARIABLES`` and ``~`` expanded until nothing changes;
* ``{AIRFLOW_HOME}`` is a template of Airflow's built-in defaults only, filled with
  ``AIRFLOW_HOME`` (or ``~/airflow``).

Where Airflow would silently do something other than what the value says, this refuses with an
:class:`AirflowConfigError` instead (``supervise`` exits 2 before contacting anything):

* ``_CMD`` and ``_SECRET`` variants (``AIRFLOW__CORE__EXECUTION_API_SERVER_URL_CMD``, or
  ``execution_api_server_url_cmd`` in ``airflow.cfg``): Airflow runs or looks them up for
  sensitive options only, and none of these is one, so Airflow ignores them;
* a literal ``{AIRFLOW_HOME}`` in a value set by a variable or ``airflow.cfg``: Airflow
  leaves it as it is there, naming a folder called ``{AIRFLOW_HOME}``;
* an unreadable or malformed ``airflow.cfg`` (Airflow's task runner skips one it cannot parse,
  its executor fails), an empty ``AIRFLOW_HOME`` or ``AIRFLOW_CONFIG``, ``[core]
  unit_test_mode`` (Airflow swaps in its unit-test configuration), a relative
  ``dags_folder`` or ``base_log_folder`` (Airflow's documentation requires absolute ones), and
  a server URL the supervisor's client cannot use (:func:`comms.activity.check_server_url`).

Not followed: team-scoped settings of multi-team mode (``AIRFLOW__{TEAM}___...``), which a
team's executor passes to its worker. Run ``tests/interop/test_airflow_workload_interop.py``
after an Airflow upgrade: it compares these readings with Airflow's own.
"""

from __future__ import annotations

import configparser
import json
import os
import re
from collections.abc import Mapping
from typing import Any, NamedTuple

import msgspec

from comms.activity import ActivityError, _shown, check_server_url

__all__ = [
    "LOCAL_DAG_BUNDLE",
    "AirflowConfigError",
    "AirflowSettings",
    "Bundle",
    "bundle_path",
    "read_airflow_settings",
]

#: The class path of Airflow's bundle of a local folder, the only kind with a path here.
LOCAL_DAG_BUNDLE = "airflow.dag_processing.bundles.local.LocalDagBundle"
#: The name Airflow gives the bundle of its own example DAGs ([core] load_examples).
_EXAMPLE_BUNDLE = "example_dags"
#: How Airflow names each installed provider's example bundle: ``{distribution}-example-dags``.
_PROVIDER_EXAMPLES_SUFFIX = "-example-dags"

# Airflow 3.3.2's defaults (config_templates/config.yml) for the options read here; None: no
# default. Its bundle list default is this JSON, spread over lines.
_DEFAULTS: dict[tuple[str, str], str | None] = {
    ("core", "dags_folder"): "{AIRFLOW_HOME}/dags",
    ("core", "execution_api_server_url"): None,
    ("core", "load_examples"): "True",
    ("core", "multi_team"): "False",
    ("core", "unit_test_mode"): "False",
    ("core", "airflow_home"): None,
    ("api", "base_url"): None,
    ("logging", "base_log_folder"): "{AIRFLOW_HOME}/logs",
    ("dag_processor", "dag_bundle_config_list"): json.dumps(
        [{"name": "dags-folder", "classpath": LOCAL_DAG_BUNDLE, "kwargs": {}}]
    ),
}
# Airflow's deprecated_options among them: the new name, then the old one, is looked for.
_DEPRECATED: dict[tuple[str, str], tuple[str, str]] = {
    ("core", "execution_api_server_url"): ("workers", "execution_api_server_url"),
    ("api", "base_url"): ("webserver", "base_url"),
}
# What Airflow's executors use when neither [core] execution_api_server_url nor a usable
# [api] base_url is set.
_DEFAULT_BASE_URL = "http://localhost:8080"
# ``os.path.expandvars``' pattern: $name or ${name}.
_VARIABLE = re.compile(r"\$(\w+|\{[^}]*\})", re.ASCII)
# A value still changing after this many expansions refers to itself (A='$A-').
_MAX_EXPANSIONS = 32


class AirflowConfigError(ActivityError):
    """An Airflow setting ``supervise`` needs is invalid, or set in a way Airflow would not
    follow. ``field`` names it as ``[core] execution_api_server_url`` or as the variable."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(field, reason, document="Airflow configuration")


class Bundle(msgspec.Struct, frozen=True, kw_only=True):
    """One entry of ``[dag_processor] dag_bundle_config_list``, as Airflow reads it."""

    name: str
    classpath: str
    kwargs: dict[str, Any]
    team_name: str | None = None


class AirflowSettings(msgspec.Struct, frozen=True, kw_only=True):
    """What Airflow 3.3.2's worker takes from its configuration to run a workload."""

    #: Airflow's ``AIRFLOW_HOME``: the variable, else the deprecated ``[core] airflow_home``,
    #: else ``~/airflow``.
    home: str
    #: The ``airflow.cfg`` read (``AIRFLOW_CONFIG``, default ``$AIRFLOW_HOME/airflow.cfg``),
    #: or None when there is none.
    config_file: str | None
    #: ``[core] execution_api_server_url``, or what Airflow derives from ``[api] base_url``
    #: (``{base_url}/execution/``, ``http://localhost:8080/execution/`` without one).
    execution_api_server_url: str
    #: ``[logging] base_log_folder``: a workload's ``log_path`` is relative to it.
    base_log_folder: str
    #: ``[core] dags_folder``: the path of a ``LocalDagBundle`` without one of its own.
    dags_folder: str
    #: ``[dag_processor] dag_bundle_config_list``; empty when Airflow configures no bundle.
    bundles: tuple[Bundle, ...]
    #: Whether Airflow also configures its example bundles (``[core] load_examples``, with a
    #: non-empty bundle list): ``example_dags`` and ``{provider}-example-dags``.
    example_bundles: bool


def read_airflow_settings(environ: Mapping[str, str] | None = None) -> AirflowSettings:
    """Read the settings as Airflow 3.3.2's worker would with this environment (default:
    ``os.environ``); raise :class:`AirflowConfigError` naming the setting."""
    env = os.environ if environ is None else environ
    default_home = _expand_home(env)
    config_file, parser = _read_config_file(env, default_home)
    config = _Config(env, default_home, config_file, parser)
    if config.boolean("core", "unit_test_mode"):
        raise AirflowConfigError(
            config.source("core", "unit_test_mode"),
            "is true: Airflow would then replace its whole configuration with its unit-test "
            "configuration; expected false outside Airflow's own tests",
        )
    bundles = _bundles(config)
    return AirflowSettings(
        home=_airflow_home(config, env, default_home),
        config_file=config_file,
        execution_api_server_url=_execution_api_server_url(config),
        base_log_folder=_absolute_path(config, "logging", "base_log_folder"),
        dags_folder=_absolute_path(config, "core", "dags_folder"),
        bundles=bundles,
        example_bundles=bool(bundles) and config.boolean("core", "load_examples"),
    )


def bundle_path(settings: AirflowSettings, name: str) -> str | None:
    """The folder of bundle ``name`` if it is a ``LocalDagBundle``, None for another kind
    (and for Airflow's example bundles, which live inside Airflow's installation).

    Raises :class:`AirflowConfigError` for a name Airflow does not configure: its task runner
    would fail with "Requested bundle ... is not configured".
    """
    for bundle in settings.bundles:
        if bundle.name == name:
            if bundle.classpath != LOCAL_DAG_BUNDLE:
                return None
            path: str | None = bundle.kwargs.get("path")
            return settings.dags_folder if path is None else path
    if settings.example_bundles and (
        name == _EXAMPLE_BUNDLE or name.endswith(_PROVIDER_EXAMPLES_SUFFIX)
    ):
        return None
    names = ", ".join(repr(bundle.name) for bundle in settings.bundles) or "none"
    raise AirflowConfigError(
        "[dag_processor] dag_bundle_config_list",
        f"has no bundle named {_shown(name)}, which the workload names; configured: {names}",
    )


class _Value(NamedTuple):
    """A setting's expanded value and where it was found, for errors."""

    text: str
    #: The variable's name, or ``[section] key``.
    field: str
    #: "" for a variable; " (in /path/airflow.cfg)" or " (Airflow's default)".
    where: str


class _CaseKeepingParser(configparser.ConfigParser):
    """``airflow.cfg`` as Airflow parses it: option names keep their case."""

    def optionxform(self, optionstr: str) -> str:
        return optionstr


class _Config:
    """Airflow's lookup of one option: variables, then ``airflow.cfg``, then its default."""

    def __init__(
        self,
        environ: Mapping[str, str],
        default_home: str,
        config_file: str | None,
        parser: configparser.ConfigParser,
    ) -> None:
        self._environ = environ
        self._default_home = default_home
        self._config_file = config_file
        self._parser = parser

    def get(self, section: str, key: str) -> _Value | None:
        """The option's value, or None when it is unset and has no default."""
        names = [(section, key)]
        if (section, key) in _DEPRECATED:
            names.append(_DEPRECATED[(section, key)])
        for name in names:
            variable = _variable(*name)
            if variable in self._environ:
                return self._expanded(self._environ[variable], variable, "")
            self._refuse_indirection(
                variable,
                [v for v in (variable + "_CMD", variable + "_SECRET") if v in self._environ],
            )
        where = f" (in {self._config_file})"
        for option_section, option in names:
            if self._parser.has_option(option_section, option):
                field = f"[{option_section}] {option}"
                try:
                    text = self._parser.get(option_section, option)
                except configparser.Error as exc:  # a bad %-interpolation
                    raise AirflowConfigError(field, f"{where[1:]}: {exc}") from None
                return self._expanded(text, field, where)
        for option_section, option in names:
            self._refuse_indirection(
                f"[{option_section}] {option}",
                [
                    f"[{option_section}] {option}{suffix}"
                    for suffix in ("_cmd", "_secret")
                    if self._parser.has_option(option_section, option + suffix)
                ],
            )
        default = _DEFAULTS[(section, key)]
        if default is None:
            return None
        text = default.replace("{AIRFLOW_HOME}", self._default_home)
        field = f"[{section}] {key}"
        return _Value(_expand(text, self._environ, field), field, " (Airflow's default)")

    def boolean(self, section: str, key: str) -> bool:
        """The option as Airflow's ``getboolean`` reads it."""
        value = self.get(section, key)
        assert value is not None  # every boolean read here has a default
        word = value.text.lower().strip().split("#")[0].strip()
        if word in ("t", "true", "1"):
            return True
        if word in ("f", "false", "0"):
            return False
        raise AirflowConfigError(
            value.field, f"got {_shown(value.text)}{value.where}; expected true or false"
        )

    def source(self, section: str, key: str) -> str:
        """Where a set option came from: its variable, or ``[section] key``."""
        value = self.get(section, key)
        return value.field if value is not None else f"[{section}] {key}"

    def _expanded(self, text: str, field: str, where: str) -> _Value:
        # A value someone set: Airflow fills templates in its own defaults only.
        if "{AIRFLOW_HOME}" in text:
            raise AirflowConfigError(
                field,
                f"got {_shown(text)}{where}: Airflow fills in {{AIRFLOW_HOME}} in its own "
                "defaults only and would use the text as it is; expected the path written "
                "out, or $AIRFLOW_HOME",
            )
        return _Value(_expand(text, self._environ, field), field, where)

    @staticmethod
    def _refuse_indirection(option: str, found: list[str]) -> None:
        if found:
            raise AirflowConfigError(
                found[0],
                "is set (not shown), but Airflow 3.3.2 runs _CMD and looks up _SECRET "
                "settings for sensitive options only, so its worker would ignore it; "
                f"expected {option} itself",
            )


def _variable(section: str, key: str) -> str:
    return f"AIRFLOW__{section.replace('.', '_').upper()}__{key.upper()}"


def _expand_home(environ: Mapping[str, str]) -> str:
    home = environ.get("AIRFLOW_HOME", "~/airflow")
    if not home:
        raise AirflowConfigError(
            "AIRFLOW_HOME", "is set but empty; expected Airflow's home folder, or leave it unset"
        )
    return _expand(home, environ, "AIRFLOW_HOME")


def _read_config_file(
    environ: Mapping[str, str], home: str
) -> tuple[str | None, configparser.ConfigParser]:
    parser = _CaseKeepingParser()
    given = environ.get("AIRFLOW_CONFIG")
    if given == "":
        raise AirflowConfigError(
            "AIRFLOW_CONFIG",
            "is set but empty; expected the path of airflow.cfg, or leave it unset",
        )
    path = (
        os.path.join(home, "airflow.cfg")
        if given is None
        else _expand(given, environ, "AIRFLOW_CONFIG")
    )
    field = "AIRFLOW_CONFIG" if given is not None else "AIRFLOW_HOME"
    try:
        # configparser.read() would skip a file it cannot open; Airflow's default encoding.
        with open(path, encoding="locale") as file:
            parser.read_file(file, path)
    except FileNotFoundError:
        return None, parser
    except OSError as exc:
        raise AirflowConfigError(field, f"cannot read {path!r}: {exc.strerror}") from None
    except (configparser.Error, UnicodeDecodeError) as exc:
        raise AirflowConfigError(field, f"{path!r} is not a valid airflow.cfg: {exc}") from None
    return path, parser


def _airflow_home(config: _Config, environ: Mapping[str, str], default_home: str) -> str:
    # Airflow still honours the deprecated [core] airflow_home when AIRFLOW_HOME is unset;
    # its defaults were made with the home before it, as here.
    if "AIRFLOW_HOME" in environ:
        return default_home
    value = config.get("core", "airflow_home")
    return default_home if value is None else value.text


def _execution_api_server_url(config: _Config) -> str:
    url = config.get("core", "execution_api_server_url")
    if url is None:
        base = config.get("api", "base_url")
        base_url = "/" if base is None else base.text
        if not base_url or base_url.startswith("/"):
            base_url = _DEFAULT_BASE_URL + base_url
        # Airflow expands this fallback too: a no-op, base_url being expanded already.
        derived = f"{base_url.rstrip('/')}/execution/"
        if base is None:
            url = _Value(derived, "[core] execution_api_server_url", " (Airflow's default)")
        else:
            url = _Value(derived, base.field, f" (made from {base.text!r}{base.where})")
    try:
        check_server_url(url.text, url.field)
    except ActivityError as exc:
        raise AirflowConfigError(exc.field, f"{exc.reason}{url.where}") from None
    return url.text


def _absolute_path(config: _Config, section: str, key: str) -> str:
    value = config.get(section, key)
    assert value is not None  # both have defaults
    if not value.text.startswith("/") or "\0" in value.text:
        raise AirflowConfigError(
            value.field,
            f"got {_shown(value.text)}{value.where}; expected an absolute path, as Airflow's "
            "documentation requires",
        )
    return value.text


def _bundles(config: _Config) -> tuple[Bundle, ...]:
    value = config.get("dag_processor", "dag_bundle_config_list")
    assert value is not None  # it has a default
    expected = 'expected a JSON list of {"name", "classpath", "kwargs"} objects'
    if not value.text:
        return ()  # Airflow's getjson: no value, no bundles
    try:
        items = json.loads(value.text)
    except ValueError as exc:
        raise AirflowConfigError(
            value.field, f"got {_shown(value.text)}{value.where}: not JSON ({exc}); {expected}"
        ) from None
    if not items:
        return ()  # Airflow configures no bundle for [], {}, null, 0 or ""
    if not isinstance(items, list):
        raise AirflowConfigError(value.field, f"got {_shown(value.text)}{value.where}; {expected}")
    bundles: dict[str, Bundle] = {}
    for i, item in enumerate(items):
        at = f"item {i}{value.where}"
        try:
            bundle = msgspec.convert(item, type=Bundle)
        except msgspec.ValidationError as exc:
            raise AirflowConfigError(value.field, f"{at}: {exc}; {expected}") from None
        if bundle.name == _EXAMPLE_BUNDLE:
            raise AirflowConfigError(
                value.field,
                f"{at}: the name {_EXAMPLE_BUNDLE!r} is Airflow's, for its example DAGs "
                "([core] load_examples); expected another name",
            )
        if bundle.name in bundles:
            raise AirflowConfigError(
                value.field, f"{at}: a second bundle named {_shown(bundle.name)}"
            )
        path = bundle.kwargs.get("path")
        if bundle.classpath == LOCAL_DAG_BUNDLE and not isinstance(path, str | None):
            raise AirflowConfigError(
                value.field, f"{at}: kwargs.path got {path!r}; expected a folder's path"
            )
        if bundle.team_name is not None and not config.boolean("core", "multi_team"):
            raise AirflowConfigError(
                value.field,
                f"{at}: team_name {_shown(bundle.team_name)} needs [core] multi_team, which "
                "is off; expected no team_name",
            )
        bundles[bundle.name] = bundle
    return tuple(bundles.values())


def _expand(value: str, environ: Mapping[str, str], field: str) -> str:
    """Airflow's ``expand_env_var``: ``$NAME``, ``${NAME}`` and ``~`` until nothing changes."""
    for _ in range(_MAX_EXPANSIONS):
        expanded = _expand_user(_expand_variables(value, environ), environ)
        if expanded == value:
            return value
        value = expanded
    raise AirflowConfigError(
        field,
        f"got {_shown(value)}: still changing after {_MAX_EXPANSIONS} expansions "
        "of $VARIABLES (one refers to itself); expected a value that settles",
    )


def _expand_variables(value: str, environ: Mapping[str, str]) -> str:
    # os.path.expandvars, over ``environ``: unknown names are left as they are.
    if "$" not in value:
        return value

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name.startswith("{") and name.endswith("}"):
            name = name[1:-1]
        return environ.get(name, match.group(0))

    return _VARIABLE.sub(replace, value)


def _expand_user(value: str, environ: Mapping[str, str]) -> str:
    # os.path.expanduser, over ``environ``'s HOME.
    if not value.startswith("~"):
        return value
    import pwd  # only for a path that needs it

    end = value.find("/", 1)
    if end < 0:
        end = len(value)
    try:
        if end == 1:
            home = environ["HOME"] if "HOME" in environ else pwd.getpwuid(os.getuid()).pw_dir
        else:
            home = pwd.getpwnam(value[1:end]).pw_dir
    except KeyError:
        return value
    return (home.rstrip("/") + value[end:]) or "/"
