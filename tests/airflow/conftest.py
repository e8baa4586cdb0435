"""Airflow for the provider's tests: a throwaway AIRFLOW_HOME, the repo's dags/, a fresh
metadata DB, and connection `archify_default` pointed at each test's database.

Airflow reads AIRFLOW_HOME when it is first imported, so the environment is set here,
at import time, before any test module imports airflow.
"""

from __future__ import annotations

import copy
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DAGS_FOLDER = ROOT / "dags"
_AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="archify-airflow-"))

os.environ.update({
    "AIRFLOW_HOME": str(_AIRFLOW_HOME),
    "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "AIRFLOW__CORE__UNIT_TEST_MODE": "True",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{_AIRFLOW_HOME / 'airflow.db'}",
    "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
})


@pytest.fixture(scope="session")
def airflow_db() -> Iterator[None]:
    """A migrated, empty Airflow metadata DB, once per session (about 1.5 s)."""
    from airflow.utils import db

    db.resetdb()
    yield
    shutil.rmtree(_AIRFLOW_HOME, ignore_errors=True)


@pytest.fixture
def archify_conn(dsn: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Connection `archify_default` -> this test's database (a unix-socket host)."""
    monkeypatch.setenv("AIRFLOW_CONN_ARCHIFY_DEFAULT", dsn)
    return dsn


@pytest.fixture(scope="session")
def parsed_rollout_dag(airflow_db: None):  # noqa: ANN201 - airflow's DAG type is imported lazily
    """The example DAG, parsed from the DAGs folder as the scheduler would."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS_FOLDER / "archify_fleet_rollout.py"))
    assert bag.import_errors == {}
    return bag.get_dag("archify_fleet_rollout")


@pytest.fixture
def rollout_dag(parsed_rollout_dag):  # noqa: ANN001, ANN201
    """The parsed DAG, its params' defaults restored after each test.

    In `dag.test()` tasks run in this process, and Airflow writes a run's conf into the
    DAG's own Param objects (`Param.resolve` keeps the value), so a run's conf would be the
    next run's defaults. On workers every task parses the DAG afresh, so nothing leaks there.
    """
    dag = parsed_rollout_dag
    params = [dag.params, *(task.params for task in dag.tasks)]  # tasks hold copies
    saved = [(p.get_param(k), copy.deepcopy(p.get_param(k).value)) for p in params for k in p]
    yield dag
    for param, value in saved:
        param.value = value
