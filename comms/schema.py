"""Generate ``docs/protocol.schema.json`` from the message types.

Run ``python -m comms.schema > docs/protocol.schema.json``; a test fails when the committed
file differs from what this prints. The output is the same under every msgspec release the
project admits: what their schemas differ in is normalised here.
"""

from __future__ import annotations

import inspect
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
    task, supervisor = _normalised(task), _normalised(supervisor)
    components = {name: _normalised(schema) for name, schema in components.items()}
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


# Keywords whose values are JSON data, not schemas: a "description" key in them is data.
_DATA_KEYWORDS = frozenset({"const", "default", "enum", "examples"})


def _normalised(schema: Any) -> Any:
    """``schema`` as every admitted msgspec release would write it.

    Descriptions are docstrings as :func:`inspect.cleandoc` leaves them (msgspec 0.22 puts
    them in as written, 0.23 dedents them). The alternatives of an ``anyOf`` are sorted
    (their order means nothing; msgspec up to 0.21 puts ``null`` first in ``X | None``,
    0.22 last).
    """
    if isinstance(schema, list):
        return [_normalised(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    normalised: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "description" and isinstance(value, str):
            normalised[key] = inspect.cleandoc(value)
        elif key == "anyOf" and isinstance(value, list):
            alternatives = [_normalised(item) for item in value]
            normalised[key] = sorted(
                alternatives, key=lambda item: json.dumps(item, sort_keys=True)
            )
        elif key in _DATA_KEYWORDS:
            normalised[key] = value
        else:
            normalised[key] = _normalised(value)
    return normalised


def main() -> None:
    """Print the schema as stable, indented JSON."""
    sys.stdout.write(json.dumps(protocol_schema(), indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
