"""The ``taskvisor`` command: flag errors, ``activity`` and ``serve``."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import selectors
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import jwt
import pytest

from apiserver import Admin
from apiserver.cli import main
from comms.api import TOKEN_AUDIENCE

SECRET = secrets.token_urlsafe(64)


@pytest.fixture(autouse=True)
def _no_secret_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TASKVISOR_JWT_SECRET", raising=False)


def _usage_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    with pytest.raises(SystemExit) as excinfo:
        main(argv)
    assert excinfo.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["serve", "--db", "x.db", "--secret", SECRET, "--port", "abc"],
            "argument --port: expected a port number 0-65535, got 'abc'",
        ),
        (
            ["serve", "--db", "x.db", "--secret", SECRET, "--port", "70000"],
            "argument --port: expected a port number 0-65535, got '70000'",
        ),
        (
            ["serve", "--db", "x.db", "--secret", SECRET, "--token-lifetime", "0"],
            "argument --token-lifetime: expected a number of seconds > 0, got '0'",
        ),
        (
            ["serve", "--db", "x.db", "--secret", SECRET, "--token-lifetime", "-1"],
            "argument --token-lifetime: expected a number of seconds > 0, got '-1'",
        ),
        (
            ["serve", "--db", "x.db", "--secret", SECRET, "--leeway", "nan"],
            "argument --leeway: expected a number of seconds >= 0, got 'nan'",
        ),
        (
            ["serve", "--db", "x.db", "--secret", SECRET, "--leeway", "soon"],
            "argument --leeway: expected a number of seconds >= 0, got 'soon'",
        ),
        (["serve", "--secret", SECRET], "the following arguments are required: --db"),
        (
            ["serve", "--db", "x.db"],
            "the following arguments are required: --secret (or set $TASKVISOR_JWT_SECRET)",
        ),
        (
            ["serve", "--db", "x.db", "--secret", "short"],
            "argument --secret: the JWT secret must be at least 64 bytes for HS512, got 5",
        ),
        (
            ["activity", "--db", "x.db", "--secret", SECRET, "--server", "http://h/execution/"],
            "the following arguments are required: --out",
        ),
        (
            [
                *("activity", "--db", "x.db", "--secret", SECRET, "--out", "a.json"),
                *("--server", "http://h/execution/"),
            ],
            "one of the arguments --entrypoint --command is required",
        ),
        (
            [
                *("activity", "--db", "x.db", "--secret", SECRET, "--out", "a.json"),
                *("--server", "ftp://h/", "--entrypoint", "m:f"),
            ],
            "argument --server: expected the Execution API base URL",
        ),
        (
            [
                *("activity", "--db", "x.db", "--secret", SECRET, "--out", "a.json"),
                *("--server", "http://h/execution/", "--entrypoint", "m:f", "--var", "novalue"),
            ],
            "argument --var: expected KEY=VALUE, got 'novalue'",
        ),
        (
            [
                *("activity", "--db", "x.db", "--secret", SECRET, "--out", "a.json"),
                *("--server", "http://h/execution/", "--entrypoint", "m:f", "--max-tries", "-1"),
            ],
            "argument --max-tries: expected an integer >= 0, got '-1'",
        ),
        (
            [
                *("activity", "--db", "x.db", "--secret", SECRET, "--out", "a.json"),
                *("--server", "http://h/execution/", "--command"),
            ],
            "argument --command: expected the command and its arguments",
        ),
        (
            [
                *("activity", "--db", "x.db", "--secret", SECRET, "--out", "a.json"),
                *("--server", "http://h/execution/", "--entrypoint", "m:f", "--context", "[1]"),
            ],
            "argument --context: expected a JSON object",
        ),
        (
            [
                *("activity", "--db", "x.db", "--secret", SECRET, "--out", "a.json"),
                *("--server", "http://h/execution/", "--entrypoint", "m:f", "--conn", "db"),
            ],
            "argument --conn: expected CONN_ID=URI",
        ),
        (["bogus"], "invalid choice: 'bogus'"),
        ([], "the following arguments are required: COMMAND"),
    ],
)
def test_bad_flags_exit_2_naming_the_flag_and_the_expected_value(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert message in _usage_error(capsys, argv)


def test_activity_creates_a_queued_ti_and_writes_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "state.sqlite"
    out = tmp_path / "activity.json"
    code = main(
        [
            *("activity", "--db", str(db), "--secret", SECRET, "--out", str(out)),
            *("--server", "http://127.0.0.1:8080/execution", "--entrypoint", "pkg.mod:run"),
            *("--var", "greeting=hello=world", "--env", "MODE=test", "--max-tries", "2"),
            *("--dag-id", "etl", "--task-id", "load", "--timeout", "30"),
            *("--context", '{"variables": {"a": "b"}}', "--run-as", "nobody"),
            *("--conn", "wh=postgres://user:p%40ss@db.example:5432/mydb?sslmode=disable"),
        ]
    )
    assert code == 0
    doc = json.loads(out.read_text())
    ti_id = doc["ti"]["id"]
    assert ti_id in capsys.readouterr().out
    assert doc["server"] == "http://127.0.0.1:8080/execution/"
    assert doc["entrypoint"] == "pkg.mod:run"
    assert doc["env"] == {"MODE": "test"}
    assert doc["timeout"] == 30
    assert doc["context"] == {"variables": {"a": "b"}}
    assert doc["run_as"] == "nobody"
    assert (doc["ti"]["dag_id"], doc["ti"]["task_id"]) == ("etl", "load")
    claims = jwt.decode(doc["token"], SECRET, algorithms=["HS512"], audience=TOKEN_AUDIENCE)
    assert (claims["sub"], claims["scope"]) == (ti_id, "workload")
    with Admin(db) as admin:
        ti = admin.get_task_instance(ti_id)
        assert (ti.state, ti.max_tries) == ("queued", 2)
        assert admin.get_variable("greeting") == "hello=world"
        conn = admin.get_connection("wh")
        assert conn["conn_type"] == "postgres"
        assert (conn["host"], conn["port"], conn["schema"]) == ("db.example", 5432, "mydb")
        assert (conn["login"], conn["password"]) == ("user", "p@ss")
        assert json.loads(conn["extra"]) == {"sslmode": "disable"}


def test_activity_takes_the_secret_from_the_environment_and_a_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TASKVISOR_JWT_SECRET", SECRET)
    out = tmp_path / "activity.json"
    code = main(
        [
            *("activity", "--db", str(tmp_path / "db"), "--out", str(out)),
            *("--server", "http://127.0.0.1:8080/execution/"),
            *("--command", "./task.sh", "--verbose", "-x"),
        ]
    )
    assert code == 0
    doc = json.loads(out.read_text())
    assert doc["command"] == ["./task.sh", "--verbose", "-x"]
    assert "entrypoint" not in doc
    jwt.decode(doc["token"], SECRET, algorithms=["HS512"], audience=TOKEN_AUDIENCE)


def _read_line(process: subprocess.Popen[bytes], deadline: float) -> str:
    """The first stdout line of ``process``, failing (not hanging) after ``deadline``."""
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        assert selector.select(deadline - time.monotonic()), "no output before the deadline"
    return process.stdout.readline().decode()


def test_serve_prints_where_it_listens_and_answers_there(tmp_path: Path) -> None:
    taskvisor = Path(sys.executable).parent / "taskvisor"
    with subprocess.Popen(
        [str(taskvisor), "serve", "--port", "0", "--db", str(tmp_path / "db.sqlite")],
        env={**os.environ, "TASKVISOR_JWT_SECRET": SECRET},
        stdout=subprocess.PIPE,
    ) as process:
        try:
            line = _read_line(process, time.monotonic() + 30)
            assert line.startswith("taskvisor: Execution API listening on http://127.0.0.1:")
            url = line.split(" on ", 1)[1].strip()
            assert url.endswith("/execution/")
            with httpx.Client(timeout=10) as client:
                assert client.get(f"{url}health").json() == {"status": "healthy"}
        finally:
            process.terminate()
            # uvicorn shuts down gracefully, then re-raises the signal it caught.
            assert process.wait(timeout=30) in (0, -signal.SIGTERM)


def test_serve_on_a_busy_port_fails_clearly(tmp_path: Path) -> None:
    import socket

    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        result = subprocess.run(
            [
                *(sys.executable, "-m", "apiserver", "serve", "--port", str(port)),
                *("--db", str(tmp_path / "db.sqlite"), "--secret", SECRET),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr


def test_the_listening_socket_makes_asyncio_turn_off_nagle_on_each_connection() -> None:
    """uvicorn serves on ``listen()``'s socket through asyncio, which sets ``TCP_NODELAY`` on
    an accepted connection only when the socket says it is TCP. Without it, every response
    written as headers then body waited ~40 ms for the client's delayed ACK."""
    import asyncio
    import socket

    from apiserver.listening import listen

    async def nodelay_of_an_accepted_connection() -> int:
        accepted: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        class Probe(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                sock = transport.get_extra_info("socket")
                accepted.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
                transport.close()

        server = await asyncio.get_running_loop().create_server(Probe, sock=listen("127.0.0.1", 0))
        async with server:
            host, port = server.sockets[0].getsockname()[:2]
            _, writer = await asyncio.open_connection(host, port)
            try:
                return await asyncio.wait_for(accepted, 10)
            finally:
                writer.close()

    assert asyncio.run(nodelay_of_an_accepted_connection()) != 0


# --- taskvisor activity refuses what supervise refuses, before it queues anything ---------


def _activity_argv(tmp_path: Path, *extra: str) -> list[str]:
    return [
        *("activity", "--db", str(tmp_path / "state.sqlite"), "--secret", SECRET),
        *("--out", str(tmp_path / "activity.json"), "--var", "seeded=yes"),
        *extra,
    ]


def _assert_nothing_queued(tmp_path: Path) -> None:
    assert not (tmp_path / "activity.json").exists()
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".tmp"] == []
    db = tmp_path / "state.sqlite"
    if db.exists():
        with contextlib.closing(sqlite3.connect(db)) as conn:
            assert conn.execute("SELECT count(*) FROM task_instances").fetchone() == (0,)
            assert conn.execute("SELECT count(*) FROM variables").fetchone() == (0,)


SERVER = ("--server", "http://127.0.0.1:8080/execution/")


@pytest.mark.parametrize(
    ("extra", "line"),
    [
        (
            [*SERVER, "--entrypoint", "pkg.mod"],
            "taskvisor: argument --entrypoint: activity $.entrypoint: got 'pkg.mod'; "
            "expected 'package.module:callable' or 'path/file.py:callable'",
        ),
        (
            [*SERVER, "--entrypoint", "m:f", "--context", '{"variables": 1}'],
            "taskvisor: argument --context: activity $.context.variables: "
            "Expected `object`, got `int`",
        ),
        (
            ["--server", "http://127.0.0.1:99999/execution/", "--entrypoint", "m:f"],
            "taskvisor: argument --server: activity $.server: "
            "got 'http://127.0.0.1:99999/execution/': Port out of range 0-65535",
        ),
        (
            [*SERVER, "--entrypoint", "m:f", "--run-as", ""],
            "taskvisor: argument --run-as: activity $.run_as: got ''; expected a user name",
        ),
        (
            [*SERVER, "--entrypoint", "m:f", "--log-path", ""],
            "taskvisor: argument --log-path: activity $.log_path: got ''; expected a file path",
        ),
        (
            [*SERVER, "--entrypoint", "m:f", "--dag-id", ""],
            "taskvisor: argument --dag-id: activity $.ti.dag_id: got ''; "
            "expected 1 to 250 characters",
        ),
        (
            [*SERVER, "--entrypoint", "m:f", "--env", "A-B=1"],
            "taskvisor: argument --env: activity $.env.A-B: expected a variable name",
        ),
        (
            [*SERVER, "--entrypoint", "m:f", "--context", '{"variables": {"a": "1"}, "x": 2}'],
            "taskvisor: argument --context: activity $.context.x: unknown field",
        ),
    ],
    ids=[
        "entrypoint-without-colon",
        "context-variables-not-an-object",
        "server-port-99999",
        "empty-run-as",
        "empty-log-path",
        "empty-dag-id",
        "bad-env-name",
        "unknown-context-field",
    ],
)
def test_activity_refuses_what_supervise_refuses_in_one_line_and_queues_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], line: str
) -> None:
    code = main(_activity_argv(tmp_path, *extra))

    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith(line), err
    assert len(err.splitlines()) == 1
    _assert_nothing_queued(tmp_path)


def test_activity_with_a_database_in_a_missing_directory_fails_in_one_line(
    tmp_path: Path,
) -> None:
    # A real process: a traceback would reach stderr whatever main() returns.
    result = subprocess.run(
        [
            *(sys.executable, "-m", "apiserver", "activity"),
            *("--db", str(tmp_path / "no" / "such" / "x.sqlite"), "--secret", SECRET),
            *("--out", str(tmp_path / "activity.json"), *SERVER, "--entrypoint", "m:f"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"taskvisor: argument --db: cannot open the database "
        f"'{tmp_path / 'no' / 'such' / 'x.sqlite'}': unable to open database file"
    ]
    _assert_nothing_queued(tmp_path)


def test_activity_with_an_unwritable_out_queues_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "missing" / "activity.json"
    argv = _activity_argv(tmp_path, *SERVER, "--entrypoint", "m:f")
    argv[argv.index("--out") + 1] = str(out)

    code = main(argv)

    assert code == 2
    assert capsys.readouterr().err == (
        f"taskvisor: argument --out: cannot write '{out}': No such file or directory\n"
    )
    _assert_nothing_queued(tmp_path)


def test_activity_into_another_teams_dag_run_fails_in_one_line_and_writes_no_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with Admin(tmp_path / "state.sqlite") as admin:
        admin.create_dag_run("taskvisor", "r1", team="blue")

    code = main(
        _activity_argv(tmp_path, *SERVER, "--entrypoint", "m:f", "--run-id", "r1", "--team", "red")
    )

    assert code == 2
    assert capsys.readouterr().err == (
        "taskvisor: dag run taskvisor/r1 belongs to team 'blue', not 'red'\n"
    )
    _assert_nothing_queued(tmp_path)


def test_the_activity_it_writes_passes_supervises_validator(tmp_path: Path) -> None:
    from comms.activity import parse_activity

    code = main(_activity_argv(tmp_path, *SERVER, "--command", "./task.sh", "-x"))

    assert code == 0
    parsed = parse_activity((tmp_path / "activity.json").read_bytes())
    assert parsed.command == ["./task.sh", "-x"]
    assert (tmp_path / "activity.json").stat().st_mode & 0o777 == 0o600
