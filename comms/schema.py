"""Generate ``docs/protocol.schema.json`` from the message types.

Run ``python -m comms.schema > docs/protocol.schema.json``; a test fails when the committed
file differs from what this prints.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import msgspec

from comms.messages import PROTOCOL_VERSION, TaskMessage, ToTask

__all__ = ["protocol_schema"]


def protocol_schema() -> dict[str, Any]:
    """Return the JSON Schema of both directions of the task channel."""
    (task, supervisor), components = msgspec.json.schema_components(
        [TaskMessage, ToTask], ref_template="#/$defs/{name}"
    )
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": f"taskvisor task channel, protocol version {PROTOCOL_VERSION}",
        "description": (
            "One JSON object per line, UTF-8, newline-terminated. "
            "'task_to_supervisor' is what a task may send; 'supervisor_to_task' what it receives."
        ),
        "$defs": dict(sorted(components.items())),
        "properties": {"task_to_supervisor": task, "supervisor_to_task": supervisor},
    }


def main() -> None:
    """Print the schema as stable, indented JSON."""
    sys.stdout.write(json.dumps(protocol_schema(), indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
