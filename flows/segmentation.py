"""The `customer-segmentation` flow: ingest -> clean -> features -> cluster -> report -> publish.

Each stage is a thin Prefect task around a plain function in `tasks/`; the flow only wires them.
"""

import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone

import polars as pl
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact

from flows.parameters import RunParameters, SegmentationParameters
from tasks import artifacts, clean, cluster, features, ingest, publish, report
from tasks.errors import DataContractError, SegmentsError
from tasks.generate import generate_transactions


MAX_FAILURE_CASES = 1_000


@dataclass(frozen=True)
class RunSummary:
    """What a finished run tells its caller."""

    run_id: str
    raw_rows: int
    clean_rows: int
    quarantined_rows: int
    customers: int
    segments: int
    outlier_share: float
    segments_url: str
    report_url: str | None
    manifest_url: str


@task(name="ingest")
def load_transactions(params: RunParameters) -> ingest.IngestedTransactions:
    """Read the export, or generate the synthetic demo data when no input is given."""
    started = time.perf_counter()
    if params.input is None:
        loaded = ingest.from_generated(generate_transactions(params.demo_lines, seed=params.seed), params.seed)
    else:
        loaded = ingest.load_transactions(params.input, params.column_mapping)
    log_stage("ingest", started, rows=loaded.transactions.height, source=loaded.fingerprint.source)
    return loaded


@task(name="clean")
def clean_transactions(raw: pl.DataFrame, params: RunParameters) -> clean.CleanedTransactions:
    """Apply the cleaning rules; every removed row lands in the quarantine with its rule."""
    started = time.perf_counter()
    options = clean.CleaningOptions(non_product_codes=tuple(params.non_product_codes), countries=tuple(params.countries))
    with contract_failures_published("clean"):
        cleaned = clean.clean_transactions(raw, options)
    log_stage("clean", started, clean_rows=cleaned.lines.height, quarantined_rows=cleaned.quarantine.height)
    return cleaned


@task(name="features")
def build_features(cleaned: clean.CleanedTransactions, params: RunParameters) -> pl.DataFrame:
    """One row of behaviour features per customer."""
    started = time.perf_counter()
    with contract_failures_published("features"):
        customer_features = features.build_features(cleaned.lines, cleaned.returns, params.snapshot_date)
    log_stage("features", started, customers=customer_features.height)
    return customer_features


@task(name="cluster")
def fit_segments(customer_features: pl.DataFrame, params: SegmentationParameters) -> cluster.Segmentation:
    """DBSCAN segments with names, profiles and quality metrics."""
    started = time.perf_counter()
    options = cluster.ClusteringOptions(
        features=tuple(params.features), scaler=params.scaler, eps=params.eps, min_samples=params.min_samples,
        min_segment_share=params.min_segment_share, max_outlier_share=params.max_outlier_share,
        resamples=params.stability_resamples, seed=params.seed,
    )
    with contract_failures_published("cluster"):
        segmentation = cluster.fit_segments(customer_features, options)
    log_stage("cluster", started, eps=round(segmentation.eps, 4), min_samples=segmentation.min_samples,
               **{key: round(value, 4) if isinstance(value, float) else value
                  for key, value in segmentation.metrics.items()})
    return segmentation


@task(name="report")
def render_report(
    run_id: str, params: SegmentationParameters, loaded: ingest.IngestedTransactions,
    cleaned: clean.CleanedTransactions, customer_features: pl.DataFrame, segmentation: cluster.Segmentation,
) -> tuple[dict[str, bytes], dict]:
    """Every file of the run (data exports, charts, report.html) and the manifest's body."""
    started = time.perf_counter()
    segments = artifacts.segment_table(customer_features, segmentation.assignments)
    metrics = {**segmentation.metrics, "eps": segmentation.eps, "min_samples": segmentation.min_samples,
               **artifacts.planted_agreement(segments, loaded.planted_archetypes)}
    inputs = report.ReportInputs(
        run_id=run_id, segments=segments, profiles=segmentation.profiles, quality=cleaned.quality(),
        k_distances=segmentation.k_distances.tolist(), eps=segmentation.eps, min_samples=segmentation.min_samples,
        projection=segmentation.projection, metrics=metrics, parameters=params.model_dump(mode="json"),
        input_description=ingest.describe(loaded), reproduce_command=params.as_command_line(run_id),
    )
    charts = report.render_charts(inputs)
    files = {
        **artifacts.data_files(segments, segmentation.profiles, cleaned),
        **segmentation.model.to_files(),
        **{f"charts/{name}": png for name, png in charts.items()},
        "report.html": report.render_report_html(inputs, charts).encode(),
    }
    manifest = artifacts.manifest_body(run_id, params.model_dump(mode="json"), loaded.fingerprint, cleaned, segments,
                                       {**metrics, "eps_search": segmentation.eps_search})
    log_stage("report", started, files=len(files))
    return files, manifest


@task(name="publish")
def publish_run(
    run_id: str, target: str, files: dict[str, bytes], manifest: dict, s3: publish.S3Settings = publish.S3Settings(),
    report_link_expiry_seconds: int = publish.DEFAULT_LINK_EXPIRY_SECONDS,
) -> publish.PublishedRun:
    """Store the files, then the manifest, then latest.json; link the report, if any, from the run in the UI."""
    started = time.perf_counter()
    store = publish.open_store(target, settings=s3)
    published = publish.publish_run(store, run_id, files, manifest)
    logged_links = {}
    if "report.html" in files:
        link = store.download_url(publish.run_key(run_id, "report.html"), report_link_expiry_seconds)
        expiry = f"; the link works until {link.expires_at:%Y-%m-%d %H:%M} UTC" if link.expires_at else ""
        create_link_artifact(key="report", link=link.url, link_text="report.html",
                             description=f"The run's report{expiry}")
        logged_links["report"] = publish.without_query(link.url)  # a presigned URL's query holds its signature
    log_stage("publish", started, files=len(published.files), manifest=published.manifest_url, **logged_links)
    return published


@flow(name="customer-segmentation")
def customer_segmentation(params: SegmentationParameters = SegmentationParameters()) -> RunSummary:
    """Find campaign-ready customer segments in an invoice-line export and publish them."""
    run_id = params.run_id or new_run_id()
    retrying = retry_options(params)
    loaded = load_transactions.with_options(**retrying)(params)
    cleaned = clean_transactions.with_options(**retrying)(loaded.transactions, params)
    customer_features = build_features.with_options(**retrying)(cleaned, params)
    segmentation = fit_segments.with_options(**retrying)(customer_features, params)
    files, manifest = render_report.with_options(**retrying)(run_id, params, loaded, cleaned, customer_features, segmentation)
    published = publish_run.with_options(**retrying)(
        run_id, params.target, files, manifest, s3=params.s3_settings(),
        report_link_expiry_seconds=params.report_link_expiry_seconds,
    )
    summary = RunSummary(
        run_id=run_id,
        raw_rows=cleaned.raw_rows,
        clean_rows=cleaned.lines.height,
        quarantined_rows=cleaned.quarantine.height,
        customers=customer_features.height,
        segments=segmentation.metrics["segments"],
        outlier_share=segmentation.metrics["outlier_share"],
        segments_url=published.files["segments.csv"],
        report_url=published.files["report.html"],
        manifest_url=published.manifest_url,
    )
    publish_prefect_artifacts(summary, segmentation.profiles)
    return summary


def retry_options(params: RunParameters) -> dict:
    """Task options that retry a failed stage as the parameters say, transient failures only."""
    return {"retries": params.retries, "retry_delay_seconds": params.retry_delay_seconds,
            "retry_condition_fn": is_transient_failure}


def is_transient_failure(task, task_run, state) -> bool:
    """Retry what the outside world may fix by itself; bad input or a refused bucket fail at once."""
    try:
        state.result()
    except SegmentsError as error:
        return getattr(error, "retryable", False)
    except Exception:
        return True
    return False


@contextmanager
def contract_failures_published(stage: str) -> Iterator[None]:
    """Attach the failure cases of a broken data contract to the run as a table, then fail it."""
    try:
        yield
    except DataContractError as error:
        if error.failure_cases is not None:
            create_table_artifact(
                key=f"{stage}-contract-failures",
                table=error.failure_cases.head(MAX_FAILURE_CASES).with_columns(pl.all().cast(pl.String)).to_dicts(),
                description=f"First {MAX_FAILURE_CASES} failure cases: {error}"[:1000],
            )
        raise


def new_run_id() -> str:
    """UTC timestamp plus a random suffix: sortable, and unique even for runs started the same second."""
    return f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def publish_prefect_artifacts(summary: RunSummary, profiles: pl.DataFrame) -> None:
    """A markdown summary and the segment table, shown next to the run in the UI (publish_run links the report)."""
    create_markdown_artifact(
        key="run-summary",
        markdown=(
            f"# Customer segmentation {summary.run_id}\n\n"
            f"| rows in | quarantined | clean | customers | segments | outliers |\n|---|---|---|---|---|---|\n"
            f"| {summary.raw_rows:,} | {summary.quarantined_rows:,} | {summary.clean_rows:,} | {summary.customers:,} "
            f"| {summary.segments} | {summary.outlier_share:.1%} |\n\n"
            f"Segments: {summary.segments_url}\n\nReport: {summary.report_url or 'none'}\n"
        ),
        description="Counts of the run",
    )
    create_table_artifact(
        key="segments",
        table=profiles.select("segment", "segment_name", "customers", "customer_share", "revenue_share", "action")
        .with_columns(pl.col("customer_share", "revenue_share").round(4))
        .to_dicts(),
        description="Campaign segments",
    )


def log_stage(stage: str, started: float, **counts) -> None:
    """One structured line per stage: its name, wall time and counts."""
    fields = " ".join(f"{key}={value}" for key, value in counts.items())
    get_run_logger().info("stage=%s seconds=%.2f %s", stage, time.perf_counter() - started, fields)
