"""The task channel protocol and the Execution API data models, shared by both sides.

Sans-IO: nothing here opens a file, a pipe or a socket. See ``docs/protocol.md``.
"""

from comms.errors import ProtocolError, SupervisorProtocolError, TaskProtocolError, TaskvisorError
from comms.framing import DEFAULT_MAX_LINE, BadLine, LineDecoder, encode
from comms.messages import PROTOCOL_VERSION

__all__ = [
    "DEFAULT_MAX_LINE",
    "PROTOCOL_VERSION",
    "BadLine",
    "LineDecoder",
    "ProtocolError",
    "SupervisorProtocolError",
    "TaskProtocolError",
    "TaskvisorError",
    "encode",
]
