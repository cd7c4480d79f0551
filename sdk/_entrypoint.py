"""Finding and calling a task's entrypoint: ``package.module:callable`` or ``file.py:callable``."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

from sdk.context import Context

__all__ = ["call_entrypoint", "load_entrypoint", "resumption_of"]

_FORMS = "'package.module:callable' or 'path/file.py:callable'"


def load_entrypoint(entrypoint: str) -> Callable[..., Any]:
    """Import and return the callable named by ``entrypoint``.

    ``package.module:callable`` is imported from ``sys.path``; ``path/file.py:callable`` is
    loaded from that file (relative to the working directory), with the file's directory put
    first on ``sys.path`` so it can import its neighbours, as ``python path/file.py`` would.
    The callable may be a dotted path inside the module (``module:Class.method``).
    """
    where, sep, name = entrypoint.rpartition(":")
    if not sep or not where or not name:
        raise ValueError(f"entrypoint must be {_FORMS}, got {entrypoint!r}")
    if where.endswith(".py") or os.sep in where:
        module = _load_file(where)
    else:
        module = importlib.import_module(where)
    target: Any = module
    for part in name.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise AttributeError(
                f"entrypoint {entrypoint!r}: {module.__name__!r} has no attribute {name!r}"
            ) from None
    if not callable(target):
        raise TypeError(f"entrypoint {entrypoint!r} is a {type(target).__name__}, not callable")
    return target  # type: ignore[no-any-return]


def resumption_of(entrypoint: str, method: str) -> str:
    """Where a deferred task resumes: ``method`` beside the entrypoint's callable.

    ``pkg.mod:main`` resumes at ``pkg.mod:<method>``, ``pkg.mod:Sensor.poke`` at
    ``pkg.mod:Sensor.<method>`` (Airflow calls the method named at deferral on the operator).
    """
    if not method.isidentifier():
        raise ValueError(f"the task was deferred with method {method!r}, not a Python name")
    where, _, name = entrypoint.rpartition(":")
    owner, dot, _ = name.rpartition(".")
    return f"{where}:{owner}{dot}{method}"


def call_entrypoint(
    function: Callable[..., Any], context: Context, kwargs: dict[str, Any] | None = None
) -> Any:
    """Call ``function`` with ``context`` if it takes a positional parameter (else without),
    and with ``kwargs`` as keyword arguments."""
    kwargs = kwargs or {}
    return function(context, **kwargs) if _takes_positional(function) else function(**kwargs)


def _takes_positional(function: Callable[..., Any]) -> bool:
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):  # some builtins have no signature
        return False
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return any(p.kind in positional for p in parameters)


def _load_file(path: str) -> ModuleType:
    full_path = os.path.abspath(path)
    if not os.path.isfile(full_path):
        raise FileNotFoundError(
            f"entrypoint file {path!r} does not exist (looked at {full_path!r})"
        )
    name = os.path.splitext(os.path.basename(full_path))[0]
    if name in sys.modules or not name.isidentifier():
        name = "taskvisor_entrypoint"
    spec = importlib.util.spec_from_file_location(name, full_path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load entrypoint file {path!r}: not a Python source file")
    module = importlib.util.module_from_spec(spec)
    directory = os.path.dirname(full_path)
    if directory not in sys.path:
        sys.path.insert(0, directory)
    sys.modules[name] = module  # so pickle, dataclasses and typing can find it
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module
