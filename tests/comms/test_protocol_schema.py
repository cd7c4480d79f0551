"""docs/protocol.schema.json is generated from comms and kept current."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest
from comms_samples import ALL_TYPES, SUPERVISOR_TYPES, TASK_TYPES

from comms.schema import protocol_schema

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_FILE = ROOT / "docs" / "protocol.schema.json"
REGENERATE = "python -m comms.schema > docs/protocol.schema.json"


def test_committed_schema_equals_what_comms_schema_prints():
    printed = subprocess.run(
        [sys.executable, "-m", "comms.schema"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    committed = SCHEMA_FILE.read_text(encoding="utf-8")
    assert committed == printed, f"docs/protocol.schema.json is stale; regenerate: {REGENERATE}"


def test_every_message_type_appears_in_the_schema():
    schema = protocol_schema()
    defs = schema["$defs"]
    missing = sorted(cls.__name__ for cls in ALL_TYPES if cls.__name__ not in defs)
    assert not missing, f"not in the schema: {missing}; regenerate: {REGENERATE}"


def test_each_direction_lists_exactly_its_own_message_types():
    schema = protocol_schema()

    def listed(direction: str) -> set[str]:
        refs = schema["properties"][direction]["anyOf"]
        return {ref["$ref"].rsplit("/", 1)[-1] for ref in refs}

    assert listed("task_to_supervisor") == {cls.__name__ for cls in TASK_TYPES}
    assert listed("supervisor_to_task") == {cls.__name__ for cls in SUPERVISOR_TYPES}


def test_schema_tags_messages_by_type_and_is_plain_json():
    schema = protocol_schema()
    assert schema["$defs"]["GetVariable"]["properties"]["type"] == {"enum": ["GetVariable"]}
    assert "id" in schema["$defs"]["GetVariable"]["required"]
    assert "id" not in schema["$defs"]["Log"]["properties"]
    assert json.loads(json.dumps(schema)) == schema


def _as_older_msgspec_writes_it(schema: Any) -> Any:
    """``schema`` as msgspec <= 0.22 writes it: docstrings with their indentation, and the
    alternatives of an ``anyOf`` in another order (up to 0.21: ``null`` first)."""
    if isinstance(schema, list | tuple):  # schema_components returns (schemas, components)
        return type(schema)(_as_older_msgspec_writes_it(item) for item in schema)
    if not isinstance(schema, dict):
        return schema
    older = {}
    for key, value in schema.items():
        if key == "description" and isinstance(value, str):
            first, *rest = value.split("\n")
            older[key] = "\n".join([first, *("    " + line if line else line for line in rest)])
        elif key == "anyOf":
            older[key] = [_as_older_msgspec_writes_it(item) for item in reversed(value)]
        else:
            older[key] = _as_older_msgspec_writes_it(value)
    return older


def test_schema_is_the_same_whichever_admitted_msgspec_writes_it(monkeypatch: pytest.MonkeyPatch):
    # A fresh install picks msgspec 0.23; Airflow 3.3's constraints pin 0.22.
    current = protocol_schema()
    real = msgspec.json.schema_components

    def older(*args: Any, **kwargs: Any) -> Any:
        return _as_older_msgspec_writes_it(real(*args, **kwargs))

    types = sorted(ALL_TYPES, key=lambda cls: cls.__name__)
    assert older(types) != real(types)  # the simulation does change something
    monkeypatch.setattr(msgspec.json, "schema_components", older)
    assert protocol_schema() == current


def test_request_ids_are_at_least_0_and_only_an_error_response_may_carry_minus_1():
    defs = protocol_schema()["$defs"]
    assert defs["SucceedTask"]["properties"]["id"]["minimum"] == 0
    assert defs["OKResponse"]["properties"]["id"]["minimum"] == 0
    assert defs["ErrorResponse"]["properties"]["id"]["minimum"] == -1
