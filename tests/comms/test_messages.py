"""comms.messages: the shape of the task channel messages."""

from __future__ import annotations

import msgspec
import pytest
from comms_samples import ALL_TYPES, SAMPLES, SUPERVISOR_TYPES, TASK_TYPES

from comms import messages as m


def test_every_message_type_has_an_example_here():
    # A new message type must be added to comms_samples, so the round trips cover it.
    assert set(SAMPLES) == ALL_TYPES


@pytest.mark.parametrize("cls", sorted(ALL_TYPES, key=lambda c: c.__name__), ids=str)
def test_message_is_tagged_by_its_class_name(cls):
    encoded = msgspec.json.decode(msgspec.json.encode(SAMPLES[cls]))
    assert encoded["type"] == cls.__name__


def test_requests_carry_an_id_and_notifications_do_not():
    requests = set(m.Request.__args__)
    for cls in TASK_TYPES:
        has_id = "id" in cls.__struct_fields__
        assert has_id == (cls in requests), cls.__name__


def test_every_response_carries_an_id():
    for cls in m.Response.__args__:
        assert "id" in cls.__struct_fields__, cls.__name__


def test_the_two_directions_share_no_message_type():
    assert not TASK_TYPES & SUPERVISOR_TYPES


def test_first_messages_state_the_protocol_version():
    assert "protocol_version" in m.Hello.__struct_fields__
    assert "protocol_version" in m.StartupDetails.__struct_fields__
    assert isinstance(m.PROTOCOL_VERSION, int)


def test_terminal_requests_are_requests():
    assert set(m.TerminalRequest.__args__) <= set(m.Request.__args__)


def test_unknown_field_is_rejected():
    with pytest.raises(msgspec.ValidationError, match="unknown field"):
        msgspec.json.decode(b'{"type":"Cancel","reason":"x","extra":1}', type=m.ToTask)


def test_error_response_codes_are_plain_strings_on_the_wire():
    line = msgspec.json.encode(m.ErrorResponse(id=-1, error=m.ErrorCode.PROTOCOL_ERROR))
    assert msgspec.json.decode(line)["error"] == "PROTOCOL_ERROR"
