"""``python -m apiserver``: the ``taskvisor`` command."""

from apiserver.cli import main

raise SystemExit(main())
