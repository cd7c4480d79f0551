"""``taskvisor``: serve the reference Execution API, write activity files, run the demo.

::

    taskvisor serve --db state.sqlite --secret S [--host 127.0.0.1] [--port 8080] \\
        [--ssl-certfile cert.pem --ssl-keyfile key.pem]
    taskvisor activity --db state.sqlite --secret S --server URL --entrypoint pkg.mod:func \\
        --out activity.json
    taskvisor demo

The JWT secret may come from ``TASKVISOR_JWT_SECRET`` instead of ``--secret``. Bad flags exit
with code 2 and a message naming the flag and what it expects. ``activity`` refuses what
``supervise`` would refuse (the same validator, :func:`comms.activity.parse_activity`) before it
queues anything; its other errors are one ``taskvisor: ...`` line too, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import sys
import urllib.parse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from apiserver.auth import MIN_SECRET_BYTES, check_secret
from apiserver.listening import listen

__all__ = ["build_parser", "main"]

SECRET_ENV = "TASKVISOR_JWT_SECRET"  # noqa: S105 (the name of the variable, not a secret)


_N = TypeVar("_N", int, float)


def _number(kind: type[_N], accepted: Callable[[_N], bool], expected: str) -> Callable[[str], _N]:
    """An argparse ``type`` reading a ``kind`` that ``accepted`` allows, refusing anything else
    with "expected <expected>, got '<text>'" (argparse prefixes the flag)."""

    def parse(text: str) -> _N:
        try:
            value = kind(text)
        except ValueError:
            pass
        else:
            if accepted(value):
                return value
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")

    return parse


_port = _number(int, lambda port: 0 <= port <= 65535, "a port number 0-65535")
_count = _number(int, lambda count: count >= 0, "an integer >= 0")
_seconds = _number(
    float, lambda value: math.isfinite(value) and value >= 0, "a number of seconds >= 0"
)
_positive_seconds = _number(
    float, lambda value: math.isfinite(value) and value > 0, "a number of seconds > 0"
)


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(
            f'expected a JSON object, e.g. \'{{"variables": {{"k": "v"}}}}\', got {text!r}'
        )
    return value


def _connection(text: str) -> dict[str, Any]:
    """``CONN_ID=URI`` in Airflow's URI form: ``type://login:password@host:port/schema?k=v``."""
    conn_id, sep, uri = text.partition("=")
    parsed = urllib.parse.urlsplit(uri)
    if not sep or not conn_id or not parsed.scheme:
        raise argparse.ArgumentTypeError(
            f"expected CONN_ID=URI, e.g. my_db=postgres://user:pass@host:5432/db, got {text!r}"
        )
    try:
        port = parsed.port
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"bad port in {text!r}: {exc}") from exc
    extra = dict(urllib.parse.parse_qsl(parsed.query))
    unquote = urllib.parse.unquote
    return {
        "conn_id": conn_id,
        "conn_type": parsed.scheme.replace("-", "_"),
        "host": unquote(parsed.hostname) if parsed.hostname else None,
        "port": port,
        "login": unquote(parsed.username) if parsed.username else None,
        "password": unquote(parsed.password) if parsed.password else None,
        "schema": unquote(parsed.path.lstrip("/")) or None,
        "extra": extra or None,
    }


def _server_url(text: str) -> str:
    parsed = urllib.parse.urlsplit(text)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise argparse.ArgumentTypeError(
            f"expected the Execution API base URL, e.g. http://127.0.0.1:8080/execution/, "
            f"got {text!r}"
        )
    return text if text.endswith("/") else text + "/"


def _add_secret(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--secret",
        help=f"JWT signing secret, at least {MIN_SECRET_BYTES} bytes (default: ${SECRET_ENV})",
    )


def _add_db(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db", required=True, type=Path, metavar="PATH", help="SQLite database file"
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``taskvisor``."""
    parser = argparse.ArgumentParser(
        prog="taskvisor", description="taskvisor's reference Execution API server and tools."
    )
    commands = parser.add_subparsers(dest="subcommand", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the reference Execution API server")
    serve.set_defaults(parser=serve)
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=_port, default=8080, help="port (0: pick a free one)")
    _add_db(serve)
    _add_secret(serve)
    serve.add_argument(
        "--token-lifetime",
        type=_positive_seconds,
        default=600.0,
        metavar="SECONDS",
        help="life of the tokens the server issues (default 600)",
    )
    serve.add_argument(
        "--leeway",
        type=_seconds,
        default=10.0,
        metavar="SECONDS",
        help="clock skew tolerated on token exp/nbf (default 10)",
    )
    serve.add_argument(
        "--refresh-floor",
        type=_seconds,
        default=30.0,
        metavar="SECONDS",
        help="always reissue tokens with less than this left (default 30, as Airflow)",
    )
    serve.add_argument(
        "--fd",
        type=_count,
        metavar="N",
        help="serve on this inherited listening socket instead of --host/--port",
    )
    serve.add_argument(
        "--ssl-certfile",
        type=Path,
        metavar="PATH",
        help="serve HTTPS with this PEM certificate (chain); needs --ssl-keyfile",
    )
    serve.add_argument(
        "--ssl-keyfile",
        type=Path,
        metavar="PATH",
        help="the PEM private key of --ssl-certfile; needs --ssl-certfile",
    )

    activity = commands.add_parser(
        "activity", help="create a queued task instance and write its activity file"
    )
    activity.set_defaults(parser=activity)
    _add_db(activity)
    _add_secret(activity)
    activity.add_argument(
        "--server", required=True, type=_server_url, metavar="URL", help="Execution API base URL"
    )
    activity.add_argument("--out", required=True, type=Path, metavar="FILE", help="activity file")
    what = activity.add_mutually_exclusive_group(required=True)
    what.add_argument("--entrypoint", help='"pkg.module:callable" or "path/file.py:callable"')
    what.add_argument(
        "--command",
        nargs=argparse.REMAINDER,
        metavar="ARG",
        help="instead of --entrypoint: the command to run (must be the last option)",
    )
    repeated = (
        ("--var", _key_value, "KEY=VALUE", "set a (global) variable in the database"),
        (
            "--conn",
            _connection,
            "CONN_ID=URI",
            "set a (global) connection, e.g. my_db=postgres://user:pass@host:5432/db",
        ),
        ("--env", _key_value, "KEY=VALUE", "extra environment for the task"),
    )
    for flag, parse, metavar, help_text in repeated:
        activity.add_argument(
            flag,
            type=parse,
            action="append",
            default=[],
            metavar=metavar,
            help=f"{help_text}; repeatable",
        )
    activity.add_argument("--dag-id", default="taskvisor", help="default: taskvisor")
    activity.add_argument("--task-id", default="task", help="default: task")
    activity.add_argument("--run-id", help="dag run id (default: a new run)")
    activity.add_argument(
        "--max-tries", type=_count, default=0, metavar="N", help="retries allowed (default 0)"
    )
    activity.add_argument("--team", help="team of a new dag run")
    activity.add_argument(
        "--timeout", type=_positive_seconds, metavar="SECONDS", help="execution timeout"
    )
    activity.add_argument("--log-path", metavar="FILE", help="task log file")
    activity.add_argument(
        "--context",
        type=_json_object,
        metavar="JSON",
        help="push mode: connections and variables served without a round trip",
    )
    activity.add_argument("--run-as", metavar="USER", help="run the task as this OS user")
    activity.add_argument(
        "--token-lifetime",
        type=_positive_seconds,
        default=600.0,
        metavar="SECONDS",
        help="life of the workload token in the file (default 600)",
    )

    demo = commands.add_parser("demo", help="run one example task end to end")
    demo.add_argument(
        "--workdir",
        type=Path,
        metavar="DIR",
        help="where the database, activity and task log go (default: a new temporary dir)",
    )
    return parser


def _secret(args: argparse.Namespace) -> str:
    parser: argparse.ArgumentParser = args.parser
    secret: str | None = args.secret or os.environ.get(SECRET_ENV)
    if not secret:
        parser.error(f"the following arguments are required: --secret (or set ${SECRET_ENV})")
    try:
        check_secret(secret)
    except ValueError as exc:
        parser.error(f"argument --secret: {exc}")
    return secret


def _check_tls_pair(args: argparse.Namespace) -> None:
    """Exit 2 naming the missing flag unless both or neither TLS flags are given."""
    if args.ssl_certfile is not None and args.ssl_keyfile is None:
        args.parser.error("argument --ssl-certfile: needs --ssl-keyfile (the certificate's key)")
    if args.ssl_keyfile is not None and args.ssl_certfile is None:
        args.parser.error("argument --ssl-keyfile: needs --ssl-certfile (the key's certificate)")


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from apiserver.app import create_app

    secret = _secret(args)
    _check_tls_pair(args)
    if args.fd is not None:
        listener = socket.socket(fileno=args.fd)
    else:
        try:
            listener = listen(args.host, args.port)
        except OSError as exc:
            print(f"taskvisor: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
            return 1
    app = create_app(
        args.db,
        secret,
        token_lifetime=args.token_lifetime,
        leeway=args.leeway,
        refresh_floor=args.refresh_floor,
    )
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=2,
        ssl_certfile=args.ssl_certfile,
        ssl_keyfile=args.ssl_keyfile,
    )
    try:
        config.load()  # now, not in run(): a bad certificate or key is a usage error
    except OSError as exc:  # ssl.SSLError is an OSError
        args.parser.error(
            f"argument --ssl-certfile/--ssl-keyfile: cannot load the certificate and key: {exc}"
        )
    host, port = listener.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    scheme = "https" if config.is_ssl else "http"
    print(f"taskvisor: Execution API listening on {scheme}://{shown}:{port}/execution/", flush=True)
    uvicorn.Server(config).run(sockets=[listener])
    return 0


#: The flag that sets each activity field, to name it in an error about the field.
_FLAG_OF_FIELD = {
    "$.server": "--server",
    "$.entrypoint": "--entrypoint",
    "$.command": "--command",
    "$.context": "--context",
    "$.env": "--env",
    "$.timeout": "--timeout",
    "$.log_path": "--log-path",
    "$.run_as": "--run-as",
    "$.ti.dag_id": "--dag-id",
    "$.ti.task_id": "--task-id",
    "$.ti.run_id": "--run-id",
}


def _refused(message: str, *, code: int = 2) -> int:
    """Report a ``taskvisor`` error as one line on stderr; return its exit code."""
    print(f"taskvisor: {message}", file=sys.stderr)
    return code


def _activity(args: argparse.Namespace) -> int:
    import sqlite3

    from apiserver.admin import Admin
    from comms.activity import ActivityError

    secret = _secret(args)
    if args.command is not None and not args.command:
        args.parser.error("argument --command: expected the command and its arguments")
    try:
        admin = Admin(args.db)
    except (sqlite3.Error, OSError) as exc:
        return _refused(f"argument --db: cannot open the database {str(args.db)!r}: {exc}")
    with admin:
        try:
            # First: write_activity refuses what supervise would refuse before it queues
            # anything, and only then are variables and connections seeded.
            ti_id = admin.write_activity(
                args.out,
                server=args.server,
                secret=secret,
                entrypoint=args.entrypoint,
                command=args.command,
                dag_id=args.dag_id,
                task_id=args.task_id,
                run_id=args.run_id,
                max_tries=args.max_tries,
                team=args.team,
                timeout=args.timeout,
                log_path=args.log_path,
                context=args.context,
                run_as=args.run_as,
                env=dict(args.env) or None,
                token_lifetime=args.token_lifetime,
            )
            for key, value in args.var:
                admin.set_variable(key, value)
            for conn in args.conn:
                conn_id, conn_type = conn.pop("conn_id"), conn.pop("conn_type")
                admin.set_connection(conn_id, conn_type, **conn)
        except ActivityError as exc:
            flag = next(
                (
                    flag
                    for field, flag in _FLAG_OF_FIELD.items()
                    if exc.field == field or exc.field.startswith((f"{field}.", f"{field}["))
                ),
                None,
            )
            return _refused(f"argument {flag}: {exc}" if flag else str(exc))
        except ValueError as exc:  # the dag run or task instance exists, or is another team's
            return _refused(str(exc))
        except OSError as exc:
            return _refused(f"argument --out: cannot write {str(args.out)!r}: {exc.strerror}")
        except sqlite3.Error as exc:
            return _refused(f"database {str(args.db)!r}: {exc}", code=1)
    print(f"taskvisor: queued task instance {ti_id}; activity written to {args.out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``taskvisor`` with ``argv`` (default: the command line); return the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.subcommand == "serve":
        return _serve(args)
    if args.subcommand == "activity":
        return _activity(args)
    from apiserver.demo import run_demo

    return run_demo(args.workdir)
