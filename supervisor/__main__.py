"""``python -m supervisor``: the same as the ``supervise`` command."""

from supervisor.cli import main

main()
