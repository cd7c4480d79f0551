"""taskvisor's side of Apache Airflow: the code that imports Airflow.

``supervisor``, ``comms`` and ``sdk`` never import Airflow (``tests/test_import_rules.py``
says so); what needs Airflow lives here and is loaded only where Airflow is installed:

- :mod:`taskvisor_airflow.task_child`: what the task child runs to become Airflow's own task
  runner under ``supervise`` (it imports Airflow's task SDK, never its scheduler side).
"""
