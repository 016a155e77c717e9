"""Wiring only: builds the DAGs from the catalog. Each task body is one call into
``datarail.pipeline`` (which never imports Airflow); this module adapts Airflow's context
(data interval, connections, asset events) to plain values.

Parse time reads the catalog YAML and nothing else: no database, no network, no pandas.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import DAG, Asset, AssetAny, BaseHook, TaskGroup, get_current_context, task
from airflow.timetables.interval import CronDataIntervalTimetable

from catalog.models import Catalog, Resource, Unit

START = datetime(2026, 1, 1, tzinfo=UTC)
DEFAULT_ARGS = {"owner": "datarail", "retries": 2, "retry_delay": timedelta(minutes=5)}
DAILY = CronDataIntervalTimetable("0 0 * * *", timezone="UTC")


def ods_asset(resource: Resource) -> Asset:
    return Asset(name=f"ods.{resource.table}", uri=f"datarail://warehouse/ods/{resource.table}")


BASE_ASSET = Asset(name="base.libraries", uri="datarail://warehouse/base/libraries")
SHARE_ASSET = Asset(name="share.sharing_list", uri="datarail://warehouse/share/sharing_list")
METRICS_ASSET = Asset(name="meta.metric_snapshots", uri="datarail://warehouse/meta/metric_snapshots")


def _interval(ctx) -> tuple[str, str]:
    """The data interval this run works on, as ISO strings.

    In order: an interval given in the run's conf (``interval_start`` / ``interval_end``: a
    manual rerun or backfill of one interval, and what the demo passes); for asset-triggered
    runs the newest interval carried by the triggering asset events (set by the load tasks);
    Airflow's data interval for time-scheduled runs; else the day of the logical date.
    """
    conf = (ctx["dag_run"].conf or {}) if ctx.get("dag_run") else {}
    if conf.get("interval_start") and conf.get("interval_end"):
        return str(conf["interval_start"]), str(conf["interval_end"])
    events = ctx.get("triggering_asset_events") or {}
    carried = [(e.extra["interval_start"], e.extra["interval_end"])
               for evs in events.values() for e in evs if e.extra and "interval_start" in e.extra]
    if carried:
        return max(carried, key=lambda x: x[1])
    start, end = ctx.get("data_interval_start"), ctx.get("data_interval_end")
    if start and end and end > start:
        return start.isoformat(), end.isoformat()
    day = (ctx.get("logical_date") or ctx["dag_run"].run_after).astimezone(UTC).date()
    s = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return s.isoformat(), (s + timedelta(days=1)).isoformat()


def _conn(conn_id: str) -> dict:
    c = BaseHook.get_connection(conn_id)
    return {"conn_type": c.conn_type, "host": c.host, "port": c.port, "login": c.login,
            "password": c.password, "schema": c.schema, "extra": c.extra_dejson}


@task
def prepare() -> dict:
    """Migrate the warehouse and snapshot the catalog (idempotent)."""
    from datarail import pipeline
    return pipeline.prepare()


def _resource_group(resource: Resource, conn_id: str, prep) -> None:
    asset = ods_asset(resource)

    def nothing_new(summary: dict) -> dict:
        # A file drop with no new file: skip validate/load/tickets instead of loading nothing.
        if summary.get("skipped"):
            from airflow.sdk.exceptions import AirflowSkipException
            raise AirflowSkipException(summary["skipped"])
        return summary

    @task(task_id="extract")
    def extract_t() -> dict:
        from datarail import pipeline
        ctx = get_current_context()
        return nothing_new(pipeline.extract(resource.code, *_interval(ctx), conn=_conn(conn_id), run_id=ctx["run_id"]))

    # Large SQL tables (catalog `partition`): plan key ranges, extract them as mapped tasks in
    # parallel, merge into one delivery. Everything else stays one task.
    @task(task_id="plan_ranges")
    def plan_t() -> list[dict]:
        from datarail import pipeline
        return pipeline.extract_plan(resource.code, conn=_conn(conn_id))

    @task(task_id="extract_range")
    def part_t(part: dict) -> dict:
        from datarail import pipeline
        ctx = get_current_context()
        return pipeline.extract(resource.code, *_interval(ctx), conn=_conn(conn_id), part=part, run_id=ctx["run_id"])

    @task(task_id="extract")
    def merge_t(parts) -> dict:
        from datarail import pipeline
        return nothing_new(pipeline.extract_merge(resource.code, *_interval(get_current_context()), parts=list(parts)))

    @task(task_id="validate")
    def validate_t(ext: dict) -> dict:
        from datarail import pipeline
        return pipeline.validate(resource.code, *_interval(get_current_context()), extract_summary=ext)

    @task(task_id="load", outlets=[asset])
    def load_t(ext: dict, val: dict) -> dict:
        from datarail import pipeline
        ctx = get_current_context()
        start, end = _interval(ctx)
        result = pipeline.load(resource.code, start, end, extract_summary=ext, validate_summary=val,
                               run_id=ctx["run_id"])
        ctx["outlet_events"][asset].extra = {"interval_start": start, "interval_end": end,
                                             "loaded": result["loaded"], "quarantined": result["quarantined"]}
        return result

    @task(task_id="tickets")
    def tickets_t(_loaded: dict) -> dict:
        from datarail import pipeline
        return pipeline.tickets(resource.code, *_interval(get_current_context()))

    if resource.partition is None:
        ext = extract_t()
        prep >> ext
    else:
        plan = plan_t()
        prep >> plan
        ext = merge_t(part_t.expand(part=plan))
    val = validate_t(ext)
    tickets_t(load_t(ext, val))


def extract_dag(catalog: Catalog, unit: Unit) -> DAG:
    """Per source unit: for each active resource extract -> validate -> load -> tickets."""
    resources = catalog.resources_of(unit.code)
    doc = (f"### Extract {unit.name_zh} ({unit.name_en})\n\nFor each resource: extract -> stage Parquet "
           f"(keyed by the data interval) -> validate with Great Expectations -> load passing rows, quarantine "
           f"the rest -> open/update feedback tickets. Resources: "
           + ", ".join(f"`{r.code}` {r.name_zh}" for r in resources))
    with DAG(dag_id=f"datarail_extract_{unit.code}", schedule=DAILY, start_date=START, catchup=False,
             default_args=DEFAULT_ARGS, doc_md=doc, max_active_runs=1,
             tags=["datarail", "extract", unit.code]) as dag:
        prep = prepare()
        for r in resources:
            with TaskGroup(group_id=r.table, tooltip=f"{r.code} {r.name_zh}"):
                _resource_group(r, unit.system(r.system).conn_id, prep)
    return dag


def base_dag(catalog: Catalog) -> DAG:
    """Asset-scheduled: rebuild the base libraries whenever any ods resource is loaded."""
    assets = [ods_asset(r) for r in catalog.resources if r.status == "active"]
    with DAG(dag_id="datarail_base_libraries", schedule=AssetAny(*assets), start_date=START, catchup=False,
             default_args=DEFAULT_ARGS, max_active_runs=1, tags=["datarail", "warehouse"],
             doc_md="### Base libraries\n\nRebuilds population, legal-entity and licence libraries "
                    "(SQL models in `warehouse_sql/base/`) from the ods area.") as dag:
        @task(outlets=[BASE_ASSET])
        def build_base() -> dict:
            from datarail import pipeline
            ctx = get_current_context()
            start, end = _interval(ctx)
            ctx["outlet_events"][BASE_ASSET].extra = {"interval_start": start, "interval_end": end}
            return pipeline.build_base(start, end)
        build_base()
    return dag


def publish_dag() -> DAG:
    """Asset-scheduled: publish share tables and the sharing list after the base libraries."""
    with DAG(dag_id="datarail_publish", schedule=[BASE_ASSET], start_date=START, catchup=False,
             default_args=DEFAULT_ARGS, max_active_runs=1, tags=["datarail", "sharing"],
             doc_md="### Publish\n\nCross-resource quality checks in the warehouse (results, evidence, "
                    "tickets), then refreshes `share.*` from rows that passed, flagging rows under an open "
                    "ticket, and the sharing list (JSON + CSV under `$DATARAIL_HOME/exports/<date>/`).") as dag:
        @task
        def cross_checks() -> dict:
            from datarail import pipeline
            return pipeline.cross_checks(*_interval(get_current_context()))

        @task(outlets=[SHARE_ASSET])
        def publish(_checked: dict) -> dict:
            from datarail import pipeline
            ctx = get_current_context()
            start, end = _interval(ctx)
            ctx["outlet_events"][SHARE_ASSET].extra = {"interval_start": start, "interval_end": end}
            return pipeline.publish(start, end)
        publish(cross_checks())
    return dag


def _optional_conn(conn_id: str) -> dict | None:
    """An Airflow connection as a dict, or ``None`` when it is not defined (the channel is off)."""
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        return _conn(conn_id)
    except AirflowNotFoundException:
        return None


def _dingtalk_sender(conn_id: str):
    """Post through the Airflow DingTalk provider when it is installed; ``None`` otherwise
    (the pipeline then posts the same message itself)."""
    try:
        from airflow.providers.dingding.hooks.dingding import DingdingHook
    except ImportError:
        return None

    def send(message: dict) -> None:
        DingdingHook(dingding_conn_id=conn_id, message_type="markdown", message=message).send()
    return send


def metrics_dag() -> DAG:
    """Asset-scheduled: compute the metric snapshot and write the source units' reports."""
    with DAG(dag_id="datarail_metrics", schedule=[SHARE_ASSET], start_date=START, catchup=False,
             default_args=DEFAULT_ARGS, max_active_runs=1, tags=["datarail", "metrics"],
             doc_md="### Metrics\n\nSharing ratio, items fully served, provision and structuring "
                    "rates, tickets per unit; then the per-unit quality reports (HTML, XLSX, GX Data Docs, "
                    "the supervision list) and digests to the units whose tickets changed (SMTP connection "
                    "`datarail_smtp`, DingTalk connection `datarail_dingtalk`).") as dag:
        @task(outlets=[METRICS_ASSET])
        def compute() -> dict:
            from datarail import pipeline
            ctx = get_current_context()
            start, end = _interval(ctx)
            ctx["outlet_events"][METRICS_ASSET].extra = {"interval_start": start, "interval_end": end}
            return pipeline.metrics(start, end)

        @task
        def quality_reports(_m: dict) -> dict:
            from datarail import pipeline
            return pipeline.reports(*_interval(get_current_context()))

        @task
        def notify(_r: dict) -> dict:
            from datarail import pipeline
            from quality.notify import SMTP_CONN_ID, WEBHOOK_CONN_ID
            webhook = _optional_conn(WEBHOOK_CONN_ID)
            return pipeline.notify(*_interval(get_current_context()), email_conn=_optional_conn(SMTP_CONN_ID),
                                   webhook_conn=webhook,
                                   webhook_send=_dingtalk_sender(WEBHOOK_CONN_ID) if webhook else None)
        notify(quality_reports(compute()))
    return dag


def export_dag() -> DAG:
    """Time-scheduled: the leadership bulletin for the previous day (每日一报)."""
    with DAG(dag_id="datarail_leadership_export", schedule=DAILY, start_date=START, catchup=False,
             default_args={**DEFAULT_ARGS, "retries": 3, "retry_delay": timedelta(minutes=30)},
             max_active_runs=1, tags=["datarail", "metrics", "leadership"],
             doc_md="### Leadership export\n\nDaily bulletin (CSV + XLSX) of the metric snapshot "
                    "under `$DATARAIL_HOME/exports/<date>/`. Retries while the snapshot is not ready.") as dag:
        @task
        def export() -> dict:
            from datarail import pipeline
            return pipeline.leadership_export(*_interval(get_current_context()))
        export()
    return dag
