"""The SDK's channel when the supervisor's answer is nested too deep to decode."""

from __future__ import annotations

import threading

import pytest
from sdk_peer import Peer, startup_details

from comms.errors import SupervisorProtocolError
from comms.messages import GetVariable, GetXCom, Hello, VariableResult
from sdk._channel import Channel


def test_an_answer_too_deep_to_decode_fails_only_its_request() -> None:
    peer = Peer()
    channel = Channel(peer.task_reads, peer.task_writes)
    try:
        peer.send(startup_details())
        channel.start()
        assert isinstance(peer.receive(), Hello)
        # Deeper than msgspec may recurse, and larger than a pipe holds: written by a thread.
        deep = b"[" * 1_000_000 + b"]" * 1_000_000
        line = b'{"type":"XComResult","id":1,"key":"k","value":' + deep + b"}\n"
        writer = threading.Thread(target=peer.send_raw, args=(line,))
        writer.start()
        with pytest.raises(SupervisorProtocolError, match="answer to request 1 is invalid"):
            channel.request(GetXCom(id=0, task_id="up"))
        writer.join()
        peer.send(VariableResult(id=2, key="k", value="v"))
        assert channel.request(GetVariable(id=0, key="k")) == VariableResult(
            id=2, key="k", value="v"
        )
    finally:
        peer.close()
        peer.close_task_ends()
