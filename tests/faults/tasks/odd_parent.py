"""Start ``supervise`` as a Celery worker might: SIGCHLD ignored, signals blocked.

Both survive ``exec``: an ignored disposition and the signal mask are inherited.
"""

from __future__ import annotations

import os
import signal
import sys

signal.signal(signal.SIGCHLD, signal.SIG_IGN)
signal.pthread_sigmask(
    signal.SIG_BLOCK,
    {signal.SIGTERM, signal.SIGINT, signal.SIGCHLD, signal.SIGHUP, signal.SIGUSR1, signal.SIGALRM},
)
os.execv(sys.executable, [sys.executable, "-m", "supervisor", *sys.argv[1:]])
