"""HTTPS end to end: real ``supervise`` against the reference server serving TLS on loopback."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from supervise_helpers import entrypoint, supervise

from apiserver.testing import ReferenceServer

TASKVISOR = Path(sys.executable).parent / "taskvisor"

#: supervise's default retry budget (the test helper's is 3 s): a retried error would show.
NO_FAST_GIVE_UP = {"TASKVISOR_API_RETRY_BUDGET": "60"}


def taskvisor_serve(tmp_path: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    """``taskvisor serve`` on a free port with ``flags``, to the end (these tests: an error)."""
    return subprocess.run(
        [str(TASKVISOR), "serve", "--port", "0", "--db", str(tmp_path / "db.sqlite"), *flags],
        env={**os.environ, "TASKVISOR_JWT_SECRET": secrets.token_urlsafe(64)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def tls_server(certificate: tuple[Path, Path]) -> Iterator[ReferenceServer]:
    """One reference server speaking HTTPS with ``certificate``, on a free loopback port."""
    cert, key = certificate
    with ReferenceServer(ssl_certfile=cert, ssl_keyfile=key) as srv:
        yield srv


@pytest.fixture
def no_extra_trust(monkeypatch: pytest.MonkeyPatch) -> None:
    """supervise trusts only the system's CA store (none of it signed our certificate)."""
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)


def test_supervise_runs_a_task_to_success_over_https_when_ssl_cert_file_trusts_the_server(
    tls_server: ReferenceServer, certificate: tuple[Path, Path], no_extra_trust: None
) -> None:
    ti_id, activity = tls_server.create_task(entrypoint("round_trips"))
    tls_server.admin.set_variable("greeting", "hello")
    tls_server.admin.set_connection("warehouse", conn_type="postgres", login="ann")
    assert tls_server.url.startswith("https://127.0.0.1:")

    run = supervise(activity, env={"SSL_CERT_FILE": str(certificate[0])})

    assert run.exit_code == 0, run.stderr
    assert tls_server.admin.get_task_instance(ti_id).state == "success"
    assert tls_server.admin.xcoms_of(ti_id)["return_value"]["greeting"] == "hello"
    assert tls_server.admin.get_variable("written_by_task") == "hello back"


def test_supervise_without_trust_in_the_certificate_exits_3_at_once_like_an_unreachable_server(
    tls_server: ReferenceServer, no_extra_trust: None, tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    ti_id, activity = tls_server.create_task(
        entrypoint("writes_marker"), env={"MARKER": str(marker)}
    )

    # The default 60 s budget: a certificate that fails verification is not retried.
    run = supervise(activity, env=NO_FAST_GIVE_UP)

    assert run.exit_code == 3, run.stderr
    assert "could not be reached" in run.stderr
    assert "certificate verify failed" in run.stderr
    (final,) = [
        r for r in run.records() if r["event"].startswith("The Execution API server could not be")
    ]
    assert "certificate verify failed" in final["error"]
    assert "not retried" in final["error"]
    assert final["exit_code"] == 3
    assert not [r for r in run.records() if "retrying" in r["event"]]
    assert not marker.exists()  # task code never ran
    assert tls_server.admin.get_task_instance(ti_id).state == "queued"


def test_supervise_with_an_https_url_at_a_plain_http_port_exits_3_at_once_saying_use_http(
    server: ReferenceServer, tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    assert server.url.startswith("http://")
    https_url = "https://" + server.url.removeprefix("http://")
    ti_id, activity = server.create_task(
        entrypoint("writes_marker"),
        env={"MARKER": str(marker)},
        extra_activity={"server": https_url},
    )

    run = supervise(activity, env=NO_FAST_GIVE_UP)

    assert run.exit_code == 3, run.stderr
    assert "does not speak TLS on that port: use an http:// URL, or check the port" in run.stderr
    (final,) = [r for r in run.records() if r.get("exit_code") == 3]
    assert final["event"] == f"The Execution API server could not be reached at {https_url}"
    assert "not retried: TLSMismatchError" in final["error"]
    assert not [r for r in run.records() if "retrying" in r["event"]]
    assert not marker.exists()  # task code never ran
    assert server.admin.get_task_instance(ti_id).state == "queued"


@pytest.mark.parametrize(
    ("given", "missing"),
    [("--ssl-certfile", "--ssl-keyfile"), ("--ssl-keyfile", "--ssl-certfile")],
)
def test_serve_with_one_tls_flag_exits_2_naming_the_missing_flag(
    tmp_path: Path, certificate: tuple[Path, Path], given: str, missing: str
) -> None:
    pem = certificate[0] if given == "--ssl-certfile" else certificate[1]
    result = taskvisor_serve(tmp_path, given, str(pem))
    assert result.returncode == 2
    assert f"argument {given}: needs {missing}" in result.stderr
    assert result.stdout == ""  # never said it was listening


def test_serve_with_a_key_that_is_not_the_certificates_exits_2_naming_both_flags(
    tmp_path: Path, certificate: tuple[Path, Path]
) -> None:
    cert, _ = certificate
    result = taskvisor_serve(tmp_path, "--ssl-certfile", str(cert), "--ssl-keyfile", str(cert))
    assert result.returncode == 2
    assert "argument --ssl-certfile/--ssl-keyfile: cannot load the certificate and key" in (
        result.stderr
    )
    assert result.stdout == ""


@pytest.mark.parametrize("given", ["ssl_certfile", "ssl_keyfile"])
def test_reference_server_with_one_tls_file_is_refused_before_anything_starts(
    tmp_path: Path, given: str
) -> None:
    with pytest.raises(ValueError, match=f"{given} needs"):
        ReferenceServer(workdir=tmp_path, **{given: tmp_path / "x.pem"})
    assert not (tmp_path / "server.sqlite").exists()
