"""The server's listening socket, made by one function for ``taskvisor serve`` and for
:class:`apiserver.testing.ReferenceServer` (which binds it and hands it down with ``--fd``).
"""

from __future__ import annotations

import socket

__all__ = ["listen"]


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: a free one), for uvicorn.

    Created with ``IPPROTO_TCP`` spelled out: asyncio turns on ``TCP_NODELAY`` only for
    accepted sockets whose protocol says TCP, and ``socket.create_server`` leaves it 0. Without
    it, a response written as headers then body waits for the client's delayed ACK (~40 ms).
    ``SO_REUSEADDR``: a restarted server rebinds its port at once, even with connections of
    the previous one in TIME_WAIT.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
        listener.listen(1024)
    except BaseException:
        listener.close()
        raise
    return listener
