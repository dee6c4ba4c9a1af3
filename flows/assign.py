"""The `assign-segments` flow: load model -> ingest -> clean -> features -> assign -> publish.

It labels the customers of a new export with the segments of an earlier `customer-segmentation`
run, so a campaign can follow customers as new invoices arrive without refitting.
"""

import time

import polars as pl
from prefect import flow, task

from flows.parameters import AssignmentParameters
from flows.segmentation import (
    RunSummary, build_features, clean_transactions, load_transactions, log_stage, new_run_id,
    finish_run, publish_run, stage_options,
)
from schemas import SegmentAssignments
from tasks import artifacts, clean, ingest, publish
from tasks.contracts import enforce
from tasks.model import SegmentModel, load_model


@task(name="load-model")
def load_segment_model(location: str, s3: publish.S3Settings = publish.S3Settings()) -> SegmentModel:
    """The published model, read before any other work so a wrong location fails at once."""
    started = time.perf_counter()
    model = load_model(location, s3)
    log_stage("load-model", started, model=location, core_samples=len(model.core_points))
    return model


@task(name="assign")
def assign_customers(customer_features: pl.DataFrame, model: SegmentModel) -> pl.DataFrame:
    """SegmentAssignments of every customer under the published model."""
    started = time.perf_counter()
    assignments = enforce(SegmentAssignments, model.assign(customer_features), "Assignment")
    log_stage("assign", started, customers=assignments.height)
    return assignments


@task(name="export")
def export_assignments(
    run_id: str, params: AssignmentParameters, loaded: ingest.IngestedTransactions,
    cleaned: clean.CleanedTransactions, customer_features: pl.DataFrame, assignments: pl.DataFrame,
) -> tuple[dict[str, bytes], dict, pl.DataFrame]:
    """The run's files, the manifest's body and the segment profiles of the assigned customers."""
    started = time.perf_counter()
    files, manifest, profiles = artifacts.assignment_artifacts(
        run_id, params.shown().model_dump(mode="json"), params.model, loaded.fingerprint, cleaned, customer_features,
        assignments)
    log_stage("export", started, customers=customer_features.height, files=len(files))
    return files, manifest, profiles


@flow(name="assign-segments")
def assign_segments(params: AssignmentParameters) -> RunSummary:
    """Give the customers of a new export the segments of a published model."""
    run_id = params.run_id or new_run_id()
    options = stage_options(params)
    model = load_segment_model.with_options(**options)(params.model, params.s3_settings())
    loaded = load_transactions.with_options(**options)(params.input, params.column_mapping, s3=params.s3_settings())
    cleaned = clean_transactions.with_options(**options)(
        loaded.transactions, params.non_product_codes, params.countries)
    customer_features = build_features.with_options(**options)(cleaned, params.snapshot_date)
    assignments = assign_customers.with_options(**options)(customer_features, model)
    files, manifest, profiles = export_assignments.with_options(**options)(
        run_id, params, loaded, cleaned, customer_features, assignments)
    published = publish_run.with_options(**options)(
        run_id, params.target, files, manifest, s3=params.s3_settings(),
        report_link_expiry_seconds=params.report_link_expiry_seconds,
    )
    return finish_run(
        run_id, cleaned.funnel.raw_rows, cleaned.funnel.clean_rows, cleaned.funnel.quarantined_rows,
        customer_features.height, profiles, published,
    )
