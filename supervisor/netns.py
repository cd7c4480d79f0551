"""Network isolation for a task: a fresh network namespace with only loopback, up.

The task can still talk to its supervisor (pipes need no network) but cannot reach the API
server or anything else, even holding a stolen token. Needs root (``CAP_SYS_ADMIN``).
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import socket
import struct

__all__ = ["enter_loopback_only_namespace"]

_CLONE_NEWNET = 0x40000000
_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1
_IFREQ = "16sH14s"


def enter_loopback_only_namespace() -> None:
    """Move the calling process into a new network namespace and bring ``lo`` up."""
    libc = ctypes.CDLL(None, use_errno=True)  # the interpreter is linked against libc
    if libc.unshare(_CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"unshare(CLONE_NEWNET): {os.strerror(errno)} (needs root)")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack(_IFREQ, b"lo", 0, b"")
        flags = struct.unpack(_IFREQ, fcntl.ioctl(sock, _SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock, _SIOCSIFFLAGS, struct.pack(_IFREQ, b"lo", flags | _IFF_UP, b""))
