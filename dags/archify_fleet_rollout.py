"""Archify fleet rollout: public first, then canary tenants, then every other tenant in shards,
over one database or several (one Airflow connection per database).

status -> drift_check -> migrate_public -> shard_tenants -> migrate_canary -> migrate_shard
(one mapped task per shard, each in one database) -> summary

- `conn_ids` names the databases (one connection each; empty: `conn_id`). `status`,
  `drift_check`, `migrate_public`, `shard_tenants` and `migrate_canary` work on every
  database at once, each with its own pool; a database that cannot be reached fails the
  task naming its connection once the others are done.
- `status` skips the whole run when nothing is pending in any database.
- `drift_check` (off unless `drift_check` is true) fails the run before anything is
  migrated, naming the tenants whose structure differs from the others' (or, with
  `drift_against: "migrations"`, from what the migration files build).
- `shard_tenants` splits each database's tenants into shards and chooses the canaries:
  the tenants named in `canary` (in whichever database holds them) and the first
  `canary_per_database` tenants of every database.
- `migrate_canary` migrates the canaries; the fleet waits for it, so a migration that
  breaks on real data breaks a few tenants, not thousands.
- `migrate_shard` fans out over any executor's workers (dynamic task mapping). A shard
  whose tenants fail fails alone, after migrating the rest of its tenants; a retry (or a
  re-run) applies only what is still pending.
- `summary` always runs: it adds up every report into one XCom and the task log, and
  fails the run if any schema failed or any report is missing.

Trigger with a config, e.g. `{"canary": ["acme"], "shard_size": 100, "dry_run": true}`, or
over two databases: `{"conn_ids": ["archify_eu", "archify_us"], "canary_per_database": 2}`.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from airflow.sdk import DAG, Param, TriggerRule, task

from archify_airflow.operators import (
    ArchifyDriftOperator,
    ArchifyMigrateOperator,
    ArchifyRolloutFailed,
    ArchifyShardTenantsOperator,
    ArchifyStatusOperator,
)
from archify_airflow.reports import describe_failures, merge_reports


def _as_list(value: Any) -> list[Any]:
    """xcom_pull of a mapped task: a list, or the bare value when there was one shard."""
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def _log_summary(merged: dict[str, Any]) -> None:
    """The run's outcome in the summary task's log, one line per migration and failure."""
    log = logging.getLogger("airflow.task")
    log.info("schemas: %d, migrations applied: %d, outcomes: %s", merged["schemas"],
             merged["applied"], merged["outcomes"])
    for database, counts in merged["databases"].items():
        log.info("database %s: %d schema(s), %d migration(s) applied, %d failed", database,
                 counts["schemas"], counts["applied"], counts["failed"])
    for database, why in merged["unreachable"].items():
        log.error("database %s could not be reached: %s", database, why)
    for version, t in sorted(merged["timings"].items()):
        log.info("%s: %d schema(s), mean %.1f ms, max %.1f ms", version, t["schemas"],
                 t["mean_ms"], t["max_ms"])
    for schema, failure in sorted(merged["failed"].items()):
        log.error("%s failed at %s: %s", schema, failure["version"], failure["message"])
    if merged["left_out"]["failed"]:
        log.error("... and %d more failed schemas (see the shard tasks' logs)",
                  merged["left_out"]["failed"])


with DAG(
    dag_id="archify_fleet_rollout",
    description="Migrate public, canary tenants, then the fleet in mapped shards",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    render_template_as_native_obj=True,  # list and bool params reach operators as such
    tags=["archify", "migrations"],
    doc_md=__doc__,
    params={
        "tenants": Param([], type="array", items={"type": "string"},
                         description="Only these tenants (empty: every registered tenant)"),
        "canary": Param([], type="array", items={"type": "string"},
                        description="Tenants migrated first; the fleet waits for them"),
        "canary_per_database": Param(0, type="integer", minimum=0,
                                     description="Also this many tenants of every database "
                                     "migrated first"),
        "shard_size": Param(50, type="integer", minimum=1,
                            description="Tenants per mapped task"),
        "concurrency": Param(8, type="integer", minimum=1,
                             description="Schemas migrated at once within one task"),
        "dry_run": Param(False, type="boolean", description="Report, change nothing"),
        "migrations": Param(None, type=["null", "string"],
                            description="Migrations folder, as seen by the workers (empty: "
                            "the worker's ARCHIFY_MIGRATIONS, else ./migrations)"),
        "drift_check": Param(False, type="boolean",
                             description="Stop before migrating if a tenant's structure "
                             "has drifted (archify drift)"),
        "drift_against": Param("majority", enum=["majority", "migrations"],
                               description="The drift check's reference"),
        "conn_id": Param("archify_default", type="string",
                         description="Airflow connection to the database"),
        "conn_ids": Param([], type="array", items={"type": "string"},
                          description="Several databases, one connection each (empty: "
                          "conn_id alone)"),
    },
) as dag:
    common: dict[str, Any] = {
        "migrations": "{{ params.migrations }}",
        "concurrency": "{{ params.concurrency }}",
    }
    every_database: dict[str, Any] = {
        "archify_conn_ids": "{{ params.conn_ids or [params.conn_id] }}", **common,
    }
    dry_run = "{{ params.dry_run }}"

    status = ArchifyStatusOperator(
        task_id="status", tenants="{{ params.tenants or None }}", short_circuit=True,
        **every_database,
    )
    drift_check = ArchifyDriftOperator(
        task_id="drift_check", enabled="{{ params.drift_check }}",
        against="{{ params.drift_against }}", fail_on_drift=True, **every_database,
    )
    public = ArchifyMigrateOperator(
        task_id="migrate_public", target="public", dry_run=dry_run, **every_database
    )
    shards = ArchifyShardTenantsOperator(
        task_id="shard_tenants", tenants="{{ params.tenants or None }}",
        canary="{{ params.canary }}", canary_per_database="{{ params.canary_per_database }}",
        shard_size="{{ params.shard_size }}", **every_database,
    )
    canary = ArchifyMigrateOperator(
        task_id="migrate_canary", dry_run=dry_run, **every_database,
        tenants="{{ ti.xcom_pull(task_ids='shard_tenants', key='canary') }}",
    )
    migrate_shard = ArchifyMigrateOperator.partial(
        task_id="migrate_shard", dry_run=dry_run, **common,
        map_index_template="{{ task.archify_conn_id }}: {{ task.tenants | first }} .. "
                           "{{ task.tenants | last }}",
    ).expand_kwargs(shards.output)

    @task(trigger_rule=TriggerRule.ALL_DONE)
    def summary(**context: Any) -> dict[str, Any]:
        """Every report in one XCom; fails the run (a leaf task) if any schema failed."""
        ti = context["ti"]
        expected_shards = len(ti.xcom_pull(task_ids="shard_tenants") or [])
        shard_reports = _as_list(ti.xcom_pull(task_ids="migrate_shard"))
        shard_reports += [None] * (expected_shards - len(shard_reports))
        reports = [ti.xcom_pull(task_ids="migrate_public"),
                   ti.xcom_pull(task_ids="migrate_canary"), *shard_reports]
        merged = merge_reports(reports)
        merged["shards"] = expected_shards
        _log_summary(merged)
        if not merged["ok"]:
            ti.xcom_push(key="return_value", value=merged)
            raise ArchifyRolloutFailed(
                describe_failures(merged["failed"], merged["left_out"]["failed"])
                + (f"; {merged['missing_reports']} task(s) reported nothing"
                   if merged["missing_reports"] else "")
                + "".join(f"; database {db} could not be reached"
                          for db in merged["unreachable"])
            )
        return merged

    status >> drift_check >> public >> shards >> canary >> migrate_shard >> summary()
