"""The `customer-segmentation` flow: ingest -> clean -> features -> cluster -> report -> publish.

Each stage is a thin Prefect task around a plain function in `tasks/`; the flow only wires them.
Ingest, clean, features and cluster persist their results and reuse them in later runs while their
arguments and code are unchanged, so a run that failed late resumes where it stopped.
"""

import dataclasses
import glob
import hashlib
import logging
import secrets
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timezone
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import polars as pl
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE, TASK_SOURCE, CacheKeyFnPolicy
from prefect.context import TaskRunContext, get_run_context
from prefect.exceptions import MissingContextError
from prefect.logging.handlers import APILogHandler
from prefect.utilities.hashing import hash_objects

from flows.parameters import FittingParameters, RunParameters, SegmentationParameters
from flows.results import FramesAsArrowPickle
from tasks import artifacts, clean, cluster, features, ingest, partition, publish
from schemas.segment_assignments import OUTLIER
from tasks.errors import DataContractError, SegmentsError
from tasks.generate import generate_transactions


MAX_FAILURE_CASES = 1_000
# Failures that are not the project's own and may pass by themselves: the network or a disk or share that hiccuped,
# S3 or the Prefect API out of reach. The project's own errors say themselves whether they may pass (`retryable`).
TRANSIENT_FAILURES = (OSError, *publish.S3_TRANSPORT_FAILURES, httpx.TransportError)
# OSErrors about a path rather than about reaching it: the same path gets the same answer.
WRONG_PATH_FAILURES = (FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError, PermissionError)
PROJECT_ROOT = Path(__file__).resolve().parents[1]
STAGE_CODE_FOLDERS = (PROJECT_ROOT / "tasks", PROJECT_ROOT / "schemas")


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


@dataclass(frozen=True)
class DemoData:
    """The synthetic demo data a run without an input reads: its size and seed."""

    lines: int
    seed: int


# --- reusing stage results across runs ---------------------------------------------------


@cache
def stage_code_digest() -> str:
    """sha256 of every module in tasks/ and schemas/, where the stages do their work."""
    digest = hashlib.sha256()
    for module in sorted(path for folder in STAGE_CODE_FOLDERS for path in folder.rglob("*.py")):
        digest.update(module.relative_to(PROJECT_ROOT).as_posix().encode() + b"\0" + module.read_bytes())
    return digest.hexdigest()


def stage_inputs_key(context: TaskRunContext, arguments: dict[str, Any]) -> str:
    """The arguments, frames by their contents, with the stage modules' digest and the Polars version."""
    by_content = {name: _by_content(value) for name, value in sorted(arguments.items())}
    return hash_objects(by_content, stage_code_digest(), pl.__version__, raise_on_failure=True)


def _by_content(value: Any) -> Any:
    """`value` with every Polars frame in it, dataclass fields included, replaced by a digest of its rows.

    A pickled frame also holds its memory layout: a column filtered free of nulls keeps a validity
    bitmap that a frame read back from storage lacks, so equal frames would pickle, and hash, apart.
    """
    if isinstance(value, pl.DataFrame):
        return str(value.schema), value.height, hashlib.sha256(value.hash_rows(seed=0).to_numpy().tobytes()).hexdigest()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return type(value).__qualname__, [_by_content(getattr(value, item.name)) for item in dataclasses.fields(value)]
    if isinstance(value, (list, tuple)):
        return [_by_content(item) for item in value]
    if isinstance(value, dict):
        return {key: _by_content(item) for key, item in value.items()}
    return value


# A stage's result is reused while its arguments, its task code and the stage modules are unchanged.
# The arguments are hashed by value, frames included, so a stage whose input data came out the same
# (from a re-read file, say) is still reused. TASK_SOURCE alone would miss an edit to tasks/clean.py;
# Prefect's default policy also keys on the flow run id, which would confine reuse to one run's retries.
REUSABLE = TASK_SOURCE + CacheKeyFnPolicy(cache_key_fn=stage_inputs_key)
# Stored with our own serializer whatever PREFECT_RESULTS_DEFAULT_SERIALIZER says: the JSON serializer cannot
# hold a Polars frame, and Prefect then only warns and stores nothing.
PERSISTED = {"persist_result": True, "result_serializer": FramesAsArrowPickle()}


def ingest_cache_key(context: TaskRunContext, arguments: dict[str, Any]) -> str | None:
    """REUSABLE's key plus the size and mtime of each local input file; None, so never reused, for remote input."""
    source = arguments["source"]
    if isinstance(source, str) and "://" in source:
        return None  # what an s3:// or https:// input holds now, only downloading it would tell
    # How S3 is reached says nothing about local input: a new endpoint to publish to leaves its result reusable.
    local_arguments = {name: value for name, value in arguments.items() if name != "s3"}
    return hash_objects(REUSABLE.compute_key(context, local_arguments, {}), local_file_states(source),
                        raise_on_failure=True)


def local_file_states(source: str | DemoData) -> list[tuple[str, int, int]]:
    """Path, size and mtime (ns) of each file a local input names: the file, a folder's files or a glob's matches."""
    if isinstance(source, DemoData):
        return []
    path = Path(source)
    if path.is_dir():
        paths = sorted(path.iterdir())
    elif path.exists():
        paths = [path]
    else:
        paths = sorted(Path(match) for match in glob.glob(source))
    return [(str(file), file.stat().st_size, file.stat().st_mtime_ns) for file in paths if file.is_file()]


# --- the stages --------------------------------------------------------------------------


@task(name="ingest", cache_policy=CacheKeyFnPolicy(cache_key_fn=ingest_cache_key), **PERSISTED)
def load_transactions(source: str | DemoData, column_mapping: dict[str, str], work_folder: Path | None = None,
                      s3: publish.S3Settings = publish.S3Settings()) -> ingest.IngestedTransactions:
    """Read the export, from S3 as `s3` says, or generate the synthetic demo data; with a work folder, stage it there."""
    started = time.perf_counter()
    if isinstance(source, DemoData):
        loaded = ingest.from_generated(generate_transactions(source.lines, seed=source.seed), source.seed)
    elif work_folder is not None:
        loaded = ingest.stage_transactions(source, work_folder / "raw", column_mapping, s3=s3)
    else:
        loaded = ingest.load_transactions(source, column_mapping, s3=s3)
    log_stage("ingest", started, rows=loaded.rows, source=loaded.fingerprint.source)
    return loaded


@task(name="clean", cache_policy=REUSABLE, **PERSISTED)
def clean_transactions(
    raw: pl.DataFrame | pl.LazyFrame, non_product_codes: list[str], countries: list[str],
    work_folder: Path | None = None,
) -> clean.CleanedTransactions:
    """Apply the cleaning rules; every removed row lands in the quarantine with its rule.

    With a work folder, the lines are cleaned in batches and the results written there.
    """
    started = time.perf_counter()
    options = clean.CleaningOptions(non_product_codes=tuple(non_product_codes), countries=tuple(countries))
    with contract_failures_published("clean"):
        if work_folder is None:
            cleaned = clean.clean_transactions(raw, options)
        else:
            cleaned = clean.clean_in_batches(raw.lazy(), work_folder / "clean", options)
    log_stage("clean", started, raw_rows=cleaned.funnel.raw_rows,
              clean_rows=cleaned.funnel.clean_rows, quarantined_rows=cleaned.funnel.quarantined_rows)
    cleaned.funnel.require_customers()
    return cleaned


@task(name="features", cache_policy=REUSABLE, **PERSISTED)
def build_features(cleaned: clean.CleanedTransactions, snapshot_date: date | None) -> pl.DataFrame:
    """One row of behaviour features per customer."""
    started = time.perf_counter()
    with contract_failures_published("features"):
        customer_features = features.build_features(cleaned.lines, cleaned.returns, snapshot_date)
    log_stage("features", started, customers=customer_features.height)
    return customer_features


@task(name="cluster", cache_policy=REUSABLE, **PERSISTED)
def fit_segments(customer_features: pl.DataFrame, options: cluster.ClusteringOptions) -> cluster.Segmentation:
    """DBSCAN segments with names, profiles and quality metrics."""
    started = time.perf_counter()
    with contract_failures_published("cluster"):
        segmentation = cluster.fit_segments(customer_features, options)
    log_stage("cluster", started, eps=round(segmentation.eps, 4), min_samples=segmentation.min_samples,
               **{key: round(value, 4) if isinstance(value, float) else value
                  for key, value in segmentation.metrics.items()})
    return segmentation


# The report embeds its run id and time, and publishing is the point of a run: both run every time.
@task(name="report", cache_policy=NO_CACHE)
def render_report(
    run_id: str, params: FittingParameters, fingerprint: ingest.InputFingerprint,
    cleaned: clean.CleanedTransactions | partition.MergedCleaning, customer_features: pl.DataFrame,
    segmentation: cluster.Segmentation, extra_metrics: dict,
) -> tuple[dict[str, bytes], dict]:
    """Every file of the run (data exports, model, charts, report.html) and the manifest's body."""
    started = time.perf_counter()
    shown = params.shown()
    files, manifest = artifacts.segmentation_artifacts(
        run_id, shown.model_dump(mode="json"), shown.as_command_line(run_id), fingerprint, cleaned,
        customer_features, segmentation, extra_metrics,
    )
    log_stage("report", started, files=len(files))
    return files, manifest


@task(name="publish", cache_policy=NO_CACHE)
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
    options = stage_options(params)
    source = params.input if params.input is not None else DemoData(params.demo_lines, params.seed)
    with streaming_work_folder(params.streaming) as work_folder:
        loaded = load_transactions.with_options(**options)(source, params.column_mapping, work_folder,
                                                           s3=params.s3_settings())
        cleaned = clean_transactions.with_options(**options)(
            loaded.transactions, params.non_product_codes, params.countries, work_folder)
        customer_features = build_features.with_options(**options)(cleaned, params.snapshot_date)
        segmentation = fit_segments.with_options(**options)(customer_features, clustering_options(params))
        files, manifest = render_report.with_options(**options)(
            run_id, params, loaded.fingerprint, cleaned, customer_features, segmentation,
            artifacts.planted_agreement(segmentation.assignments, loaded.planted_archetypes))
    published = publish_run.with_options(**options)(
        run_id, params.target, files, manifest, s3=params.s3_settings(),
        report_link_expiry_seconds=params.report_link_expiry_seconds,
    )
    return finish_run(
        run_id, cleaned.funnel.raw_rows, cleaned.funnel.clean_rows, cleaned.funnel.quarantined_rows,
        customer_features.height, segmentation.profiles, published,
    )


def finish_run(
    run_id: str, raw_rows: int, clean_rows: int, quarantined_rows: int, customers: int, profiles: pl.DataFrame,
    published: publish.PublishedRun,
) -> RunSummary:
    """The run's summary, also shown next to the run in the UI with the segment table."""
    outliers = profiles.filter(pl.col("segment") == OUTLIER)
    summary = RunSummary(
        run_id=run_id,
        raw_rows=raw_rows,
        clean_rows=clean_rows,
        quarantined_rows=quarantined_rows,
        customers=customers,
        segments=profiles.height - outliers.height,
        outlier_share=float(outliers["customer_share"].sum()),
        segments_url=published.files["segments.csv"],
        report_url=published.files.get("report.html"),
        manifest_url=published.manifest_url,
    )
    publish_prefect_artifacts(summary, profiles)
    return summary


def stage_options(params: RunParameters) -> dict:
    """Task options the parameters set: retries of transient failures, and recomputing instead of reusing results."""
    options = {"retries": params.retries, "retry_delay_seconds": params.retry_delay_seconds,
               "retry_condition_fn": is_transient_failure,
               # None rather than False, which would override PREFECT_TASKS_REFRESH_CACHE=true.
               "refresh_cache": params.refresh_cache or None}
    if getattr(params, "streaming", False):
        options["cache_policy"] = NO_CACHE  # a streamed stage's result points into a work folder removed after the run
    return options


@contextmanager
def streaming_work_folder(streaming: bool) -> Iterator[Path | None]:
    """A temporary folder (under TMPDIR) for a streamed run's Parquet files, removed when the run is done; else None."""
    if not streaming:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="segments-streaming-") as folder:
        yield Path(folder)


def clustering_options(params: FittingParameters) -> cluster.ClusteringOptions:
    """The clustering parameters, and nothing else, so that other parameters leave a cached fit reusable."""
    return cluster.ClusteringOptions(
        features=tuple(params.features), scaler=params.scaler, eps=params.eps, min_samples=params.min_samples,
        min_segment_share=params.min_segment_share, max_outlier_share=params.max_outlier_share,
        resamples=params.stability_resamples, seed=params.seed,
    )


def is_transient_failure(task, task_run, state) -> bool:
    """Retry what the outside world may fix by itself; bad input, a refused bucket or a bug fail at once."""
    try:
        state.result()
    except SegmentsError as error:
        return getattr(error, "retryable", False)
    except WRONG_PATH_FAILURES:
        return False
    except TRANSIENT_FAILURES:
        return True
    except Exception:  # a ValueError or a KeyError, say: the same code on the same data fails the same way
        return False
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


class RunLogOfTasks(APILogHandler):
    """Sends what the plain functions in tasks/ log (a folder's skipped files, say) to the log of the flow or
    task run they run in, which the UI shows. Outside a run, nothing: the console shows them either way."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            get_run_context()
        except MissingContextError:
            return
        super().emit(record)


# Not through PREFECT_LOGGING_EXTRA_LOGGERS: its API handler warns about every record logged outside a run.
logging.getLogger("tasks").addHandler(RunLogOfTasks())


def log_stage(stage: str, started: float, **counts) -> None:
    """One structured line per stage: its name, wall time and counts."""
    fields = " ".join(f"{key}={value}" for key, value in counts.items())
    get_run_logger().info("stage=%s seconds=%.2f %s", stage, time.perf_counter() - started, fields)
