"""Property 4: every secret the supervisor handed over is masked on every output path.

``tasks/probe.py:leaks_every_secret`` prints each secret to stdout and stderr, logs it as a
structured record (in the event and in fields), writes it as one line in two ``write()``
calls split inside the secret, and finally raises an exception whose message holds secrets.
(The token's own masking is proven in ``test_token_isolation.py``.)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from security_harness import (
    PROBE,
    log_records,
    reference_server,  # noqa: F401 (the server fixture)
    supervise,
)
from test_protocol_abuse import _run_measuring_peak_rss as run_measuring_peak_rss

from apiserver.testing import ReferenceServer
from supervisor.masking import MAX_TASK_SECRET_BYTES, MAX_TASK_SECRETS_BYTES, MIN_SECRET_LENGTH
from supervisor.tasklog import MAX_PENDING_LINE

BUDGET_TASK = "tests/security/tasks/secret_budget.py"

SECRETS = {
    "password": "conn-password-123",
    "extra_api_key": "extra-api-key-456",
    "extra_nested": "nested-extra-789",
    "variable": "variable-secret-321",
    "mask_secret": "task-registered-secret-77",
    "variable_set": "value-set-by-the-task-55",
}


@pytest.fixture(scope="module", params=["served by the server", "pushed in the activity"])
def leaked(
    server: ReferenceServer, request: pytest.FixtureRequest
) -> tuple[list[dict[str, Any]], str, str]:
    """The log records and raw text of one try of the leaking task, and supervise's stderr;
    its connections and variables come from the server, or from the activity's context."""
    extra = {"api_key": SECRETS["extra_api_key"], "nested": {"inner": SECRETS["extra_nested"]}}
    connection = {
        "conn_id": "sec_conn",
        "conn_type": "postgres",
        "host": "db.example",
        "login": "app",
        "password": SECRETS["password"],
        "extra": json.dumps(extra),
    }
    short = {"conn_id": "short_conn", "conn_type": "http", "password": "abcd"}
    variables = {"db_password": SECRETS["variable"], "plain_setting": "plain-value-000"}
    context = None
    if request.param == "served by the server":
        for conn in (connection, short):
            server.admin.set_connection(**conn)
        for key, value in variables.items():
            server.admin.set_variable(key, value)
    else:
        context = {"connections": [connection, short], "variables": variables}
    ti_id, activity = server.create_task(entrypoint=f"{PROBE}:leaks_every_secret", context=context)
    result = supervise(activity)
    assert result.returncode == 1, result.stderr  # the task raised at the end
    log = Path(server.workdir / "logs" / f"{ti_id}.log")
    return log_records(log), log.read_text(), result.stderr


def test_no_secret_value_reaches_the_log_file_or_supervise_output(
    leaked: tuple[list[dict[str, Any]], str, str],
) -> None:
    _, text, stderr = leaked
    for name, value in SECRETS.items():
        assert value not in text, name
        assert value not in stderr, name


@pytest.mark.parametrize("name", sorted(SECRETS))
def test_each_output_path_shows_the_mask(
    leaked: tuple[list[dict[str, Any]], str, str], name: str
) -> None:
    records, _, _ = leaked
    by_logger: dict[str, list[str]] = {}
    for record in records:
        by_logger.setdefault(record["logger"], []).append(record["event"])
    assert f"stdout {name}=***" in by_logger["task.stdout"]
    assert f"stderr {name}=***" in by_logger["task.stderr"]
    assert f"split-stdout {name}=*** end" in by_logger["task.stdout"]
    assert f"split-stderr {name}=*** end" in by_logger["task.stderr"]
    (structured,) = [r for r in records if r["event"] == f"structured {name}=***"]
    assert structured["value"] == "***"
    assert structured["nested"] == {"list": ["***"]}
    (keyed,) = [r for r in records if r["event"] == f"keyed {name}"]
    assert keyed["key-***"] == "in the field name"
    (stdlib,) = [r for r in records if r["event"] == f"via logging {name}"]
    assert stdlib["logger"] == "lg.***"


def test_exception_message_and_traceback_are_masked(
    leaked: tuple[list[dict[str, Any]], str, str],
) -> None:
    records, _, _ = leaked
    (failure,) = [r for r in records if "exception" in r]
    assert "RuntimeError: giving up with *** and ***" in failure["exception"]
    assert "giving up with *** and ***" in failure["error"]
    reported = [r for r in records if r["event"] == "Task reported failed"]
    assert reported[0]["reason"] == "RuntimeError: giving up with *** and ***"


def test_values_shorter_than_the_minimum_and_ordinary_values_are_not_masked(
    leaked: tuple[list[dict[str, Any]], str, str],
) -> None:
    records, _, _ = leaked
    assert MIN_SECRET_LENGTH == 5  # docs/security.md states this number
    events = [r["event"] for r in records if r["logger"] == "task.stdout"]
    assert "not secret: plain=plain-value-000 short_password=abcd tiny=tiny" in events


def test_a_secret_at_the_cut_of_an_over_long_line_is_masked(server: ReferenceServer) -> None:
    # Lines longer than MAX_PENDING_LINE are written in pieces; no piece may end inside a
    # secret.
    server.admin.set_connection("sec_conn", "postgres", password=SECRETS["password"])
    server.admin.set_variable("plain_setting", "plain-value-000")
    ti_id, activity = server.create_task(entrypoint=f"{PROBE}:leaks_across_an_over_long_line")
    result = supervise(activity)
    assert result.returncode == 0, result.stderr
    records = log_records(Path(server.workdir / "logs" / f"{ti_id}.log"))
    for logger, filler in (("task.stdout", "x"), ("task.stderr", "y")):
        text = "".join(r["event"] for r in records if r["logger"] == logger)
        assert text == filler * MAX_PENDING_LINE + " *** end", logger


def test_secret_text_past_the_tasks_limits_is_refused_and_memory_stays_bounded(
    server: ReferenceServer, tmp_path: Path
) -> None:
    # Before the limits, 20 x 900 KB MaskSecret took supervise to 1.7 GB of RSS.
    out = tmp_path / "budget.json"
    ti_id, activity = server.create_task(
        entrypoint=f"{BUDGET_TASK}:floods_the_masker", env={"BUDGET_OUT": str(out)}
    )
    exit_code, peak_kib = run_measuring_peak_rss(
        [sys.executable, "-m", "supervisor", str(activity)]
    )

    assert exit_code == 0
    # Supervise alone peaks near 35 MB; the accepted 256 KiB of secrets add ~15 MB of matcher
    # (measured: 41 MB in all).
    assert peak_kib < 80 * 1024, peak_kib
    report = json.loads(out.read_text())
    for answer in report["huge"]:
        assert answer["code"] == "PROTOCOL_ERROR"
        assert answer["message"].startswith(
            f"MaskSecret refused: a secret may be at most {MAX_TASK_SECRET_BYTES} bytes"
        )
    assert report["kept"] == [{"code": "OK", "message": ""}] * 4
    assert report["one_too_many"]["code"] == "PROTOCOL_ERROR"
    assert (
        f"at most {MAX_TASK_SECRETS_BYTES} bytes of secrets per try"
        in report["one_too_many"]["message"]
    )
    assert report["variable"]["code"] == "PROTOCOL_ERROR"
    assert report["variable"]["message"].endswith("the variable was not set")
    with pytest.raises(KeyError):  # never sent to the server
        server.admin.get_variable("flood_password")

    records = log_records(Path(server.workdir / "logs" / f"{ti_id}.log"))
    refusals = [
        r["event"]
        for r in records
        if r["logger"] == "supervisor"
        and r["level"] == "error"
        and r["event"].startswith("Protocol error from the task: ")
    ]
    assert len(refusals) == 22, refusals
    assert sum("MaskSecret refused: a secret may be at most" in e for e in refusals) == 20
    assert sum("PutVariable refused" in e for e in refusals) == 1
    printed = [r["event"] for r in records if r["logger"] == "task.stdout"]
    assert printed == [f"kept {i}: *** end" for i in range(4)]
    text = "\n".join(printed)
    for secret in report["kept_secrets"]:
        assert secret[:32] not in text
