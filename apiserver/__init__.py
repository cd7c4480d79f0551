"""The reference Execution API server: Starlette + uvicorn + SQLite.

Wire-compatible with the subset of Apache Airflow 3's Execution API that taskvisor's
supervisor uses. For local runs, tests, demos and benchmarks; not a second Airflow.

* :func:`apiserver.app.create_app` builds the ASGI app;
* :class:`apiserver.admin.Admin` is the scheduler's side (dag runs, queued task instances,
  variables, connections) on the same database, never reachable over HTTP;
* :mod:`apiserver.testing` runs the server as a subprocess for tests and benchmarks;
* :mod:`apiserver.activity` builds the activity files ``supervise`` reads;
* :func:`apiserver.auth.mint_token` signs task tokens;
* ``taskvisor`` (:mod:`apiserver.cli`) serves, writes activity files and runs the demo.
"""

from apiserver.admin import Admin
from apiserver.app import create_app
from apiserver.auth import mint_token

__all__ = ["Admin", "create_app", "mint_token"]
