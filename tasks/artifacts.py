"""The run's files as bytes: data exports, model, charts, report, quality figures and the manifest's body.

Nothing here touches disk or network; the publisher stores what these functions return.
"""

import io
import json
import platform
import re
from datetime import datetime, timezone
from importlib.metadata import version

import polars as pl
from sklearn.metrics import adjusted_rand_score

from schemas.segment_assignments import OUTLIER
from tasks import report
from tasks.clean import CleanedTransactions
from tasks.cluster import Segmentation, profile_segments, read_segments
from tasks.ingest import InputFingerprint, describe
from tasks.partition import MergedCleaning

PACKAGES = ("retail-segments", "prefect", "polars", "pandera", "scikit-learn", "matplotlib", "boto3", "numpy")
CRM_COLUMNS = ("CustomerID", "segment_name", "risk", "Country", "Recency", "FrequencyPurchase", "Amount", "AvgOrderValue")
# A text cell starting with one of these runs as a formula when a spreadsheet opens the CSV (OWASP: CSV injection).
FORMULA_START = r"^([=+\-@\t\r])"
Cleaning = CleanedTransactions | MergedCleaning  # one process's cleaning, or the partitioned flow's merged


def segmentation_artifacts(
    run_id: str, parameters: dict, reproduce_command: str, fingerprint: InputFingerprint,
    cleaned: Cleaning, features: pl.DataFrame, segmentation: Segmentation, extra_metrics: dict,
) -> tuple[dict[str, bytes], dict]:
    """Every file of a segmentation run (data exports, model, charts, report.html) and the manifest's body."""
    segments = segment_table(features, segmentation.assignments)
    metrics = {**segmentation.metrics, "eps": segmentation.eps, "min_samples": segmentation.min_samples, **extra_metrics}
    inputs = report.ReportInputs(
        run_id=run_id, segments=segments, profiles=segmentation.profiles, quality=cleaned.quality(),
        k_distances=segmentation.k_distances.tolist(), eps=segmentation.eps, min_samples=segmentation.min_samples,
        projection=segmentation.projection, metrics=metrics, parameters=parameters,
        input_description=describe(fingerprint, cleaned.funnel.raw_rows), reproduce_command=reproduce_command,
    )
    charts = report.render_charts(inputs)
    files = {
        **data_files(segments, segmentation.profiles, cleaned),
        **segmentation.model.to_files(),
        **{f"charts/{name}": png for name, png in charts.items()},
        "report.html": report.render_report_html(inputs, charts).encode(),
    }
    manifest = manifest_body(run_id, parameters, fingerprint, cleaned, segments,
                             {**metrics, "eps_search": segmentation.eps_search})
    return files, manifest


def assignment_artifacts(
    run_id: str, parameters: dict, model_location: str, fingerprint: InputFingerprint,
    cleaned: CleanedTransactions, features: pl.DataFrame, assignments: pl.DataFrame,
) -> tuple[dict[str, bytes], dict, pl.DataFrame]:
    """The files of a run that assigned a published model's segments, the manifest's body and the segments' profiles."""
    segments = segment_table(features, assignments)
    profiles = profile_segments(segments, read_segments(segments))
    outlier_share = float((assignments["segment"] == OUTLIER).mean())
    manifest = manifest_body(run_id, parameters, fingerprint, cleaned, segments,
                             {"model": model_location, "outlier_share": outlier_share})
    return data_files(segments, profiles, cleaned), manifest, profiles


def segment_table(features: pl.DataFrame, assignments: pl.DataFrame) -> pl.DataFrame:
    """One row per customer: every feature, the DBSCAN cluster, the campaign segment and the risk."""
    return features.join(assignments, on="CustomerID", how="inner").sort("CustomerID")


def data_files(segments: pl.DataFrame, profiles: pl.DataFrame, cleaned: Cleaning) -> dict[str, bytes]:
    """segments.parquet/.csv, profiles.csv, quality.json, quarantine.parquet and one CRM list per segment."""
    files = {
        "segments.parquet": parquet_bytes(segments),
        "segments.csv": segments.write_csv().encode(),
        "profiles.csv": profiles.write_csv().encode(),
        "quality.json": json_bytes(cleaned.quality()),
        "quarantine.parquet": parquet_bytes(cleaned.quarantine),
    }
    for (name,), members in segments.group_by("segment_name", maintain_order=True):
        files[f"exports/segment_{slug(name)}.csv"] = crm_list_csv(members)
    return files


def crm_list_csv(members: pl.DataFrame) -> bytes:
    """One segment's CRM list, for people opening it in a spreadsheet: text that would start a formula gets a
    leading ' (shown, not run). Only here: segments.csv and profiles.csv are read by programs, which need the
    values as they are."""
    return (
        members.select(CRM_COLUMNS).sort("CustomerID")
        .with_columns(pl.col(pl.String).str.replace(FORMULA_START, "'$1"))
        .write_csv().encode()
    )


def manifest_body(
    run_id: str, parameters: dict, fingerprint: InputFingerprint, cleaned: Cleaning,
    segments: pl.DataFrame, metrics: dict,
) -> dict:
    """Everything about the run except the file list, which the publisher adds as it uploads."""
    quality = cleaned.quality()
    return {
        "run_id": run_id,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "parameters": parameters,
        "input": {"source": fingerprint.source, "size_bytes": fingerprint.size_bytes, "sha256": fingerprint.sha256},
        "counts": {
            "raw_rows": quality["raw_rows"],
            "clean_rows": quality["clean_rows"],
            "quarantined_rows": quality["quarantined_rows"],
            "removed_by_rule": {rule["rule"]: rule["removed_rows"] for rule in quality["rules"]},
            "customers": segments.height,
        },
        "metrics": metrics,
        "versions": {"python": platform.python_version(), **{package: version(package) for package in PACKAGES}},
    }


def planted_agreement(segments: pl.DataFrame, planted: pl.DataFrame | None) -> dict:
    """Adjusted Rand index of the segments against the planted archetypes, when the data has them."""
    if planted is None:
        return {}
    paired = segments.join(planted, on="CustomerID", how="inner")
    return {"ari_vs_planted": float(adjusted_rand_score(paired["archetype"], paired["segment"]))}


def slug(name: str) -> str:
    """File-name-safe form of a segment name: 'High-value loyal' -> 'high-value_loyal'."""
    return re.sub(r"[^a-z0-9-]+", "_", name.lower()).strip("_") or "segment"


def parquet_bytes(frame: pl.DataFrame | pl.LazyFrame) -> bytes:
    """The frame as a Parquet file; a lazy frame (a streamed quarantine, say) is streamed into it."""
    buffer = io.BytesIO()
    frame.lazy().sink_parquet(buffer)
    return buffer.getvalue()


def json_bytes(document: dict) -> bytes:
    return json.dumps(document, indent=2, default=str).encode()
