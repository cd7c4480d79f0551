"""The task ``taskvisor demo`` runs: every SDK call a typical task makes, once.

It reads a variable and a connection, pushes an XCom and pulls it back, logs (the password
included, which the supervisor must mask), prints, and returns a value (pushed as the XCom
``return_value``). Run it yourself with ``supervise <activity>`` after ``taskvisor activity
--entrypoint examples/demo_task.py:main ...``; it expects the variable ``demo_greeting`` and
the connection ``demo_db``.
"""

from __future__ import annotations

from typing import Any

from sdk import Connection, Context, Variable, XCom, log


def main(context: Context) -> dict[str, Any]:
    """Use the SDK end to end and return a summary of what it saw."""
    greeting = Variable.get("demo_greeting")
    conn = Connection.get("demo_db")
    # Deliberately logs and prints the password: the task log must show it only as ***.
    log.info("connection fetched", conn_id=conn.conn_id, host=conn.host, password=conn.password)
    print(f"connecting to {conn.host}:{conn.port} as {conn.login} with {conn.password}")

    XCom.push("numbers", [1, 2, 3, 4])
    numbers = XCom.pull(task_id=context.ti.task_id, key="numbers")
    log.info("xcom round trip", numbers=numbers)
    print(f"{greeting}, the numbers add up to {sum(numbers)}")
    return {"greeting": greeting, "total": sum(numbers), "host": conn.host}
