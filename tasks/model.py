"""The fitted segmentation as a model that labels customers it has never seen.

A customer joins the cluster of the nearest DBSCAN core sample within eps, or the outliers when
no core sample is that close. The published labels of the fitted customers follow the same rule
(see tasks/cluster.py), so the model reproduces them. Inside a cluster that
was refined into campaign tiers, Amount and Recency thresholds pick the tier. Everything is
stored as JSON plus a Parquet table of core samples: no pickle, so loading a model from a
bucket never executes code.
"""

import io
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import polars as pl
from sklearn.neighbors import NearestNeighbors

from schemas.segment_assignments import OUTLIER
from tasks.errors import InputError

if TYPE_CHECKING:
    from tasks.publish import S3Settings

MODEL_FILE = "model/model.json"
CORE_SAMPLES_FILE = "model/core_samples.parquet"
FORMAT_VERSION = 1
# Churn risk: how long since the last purchase weighs most, then how rarely and how little they buy.
# A positive weight counts the percentile rank, a negative one its complement.
RISK_WEIGHTS = {"Recency": 0.5, "FrequencyPurchase": -0.3, "Amount": -0.2}


def weighted_risk(reference: dict[str, np.ndarray], features: pl.DataFrame) -> np.ndarray:
    """0 (safe) .. 1 (about to churn) from each risk feature's percentile rank in the base `reference` summarises.

    Training ranks its own customers this way too, against the reference the model stores, so a training
    customer assigned back gets exactly the risk it was given.
    """
    percentiles = {column: percentile_ranks(reference[column], features[column].to_numpy().astype(np.float64))
                   for column in RISK_WEIGHTS}
    score = sum(
        weight * percentiles[column] if weight > 0 else -weight * (1 - percentiles[column])
        for column, weight in RISK_WEIGHTS.items()
    )
    return np.clip(score, 0.0, 1.0)


def percentile_ranks(quantiles: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Percentile (0..1) of each value in a base given by its sorted quantiles at evenly spaced levels 0..1.

    A value that several quantiles share gets the middle of their levels, as tied customers get their average
    rank; np.interp would give it the top one, which moves common values such as one purchase a long way.
    """
    levels = np.linspace(0.0, 1.0, len(quantiles))
    first = np.searchsorted(quantiles, values, "left")
    past = np.searchsorted(quantiles, values, "right")
    middle_of_ties = (levels[np.minimum(first, len(levels) - 1)] + levels[np.maximum(past - 1, 0)]) / 2
    return np.where(past > first, middle_of_ties, np.interp(values, quantiles, levels))


def risk_level(score: pl.Expr) -> pl.Expr:
    """Low / Medium / High by thirds of the score."""
    return (pl.when(score < 1 / 3).then(pl.lit("Low")).when(score < 2 / 3).then(pl.lit("Medium"))
            .otherwise(pl.lit("High")).alias("risk"))


@dataclass(frozen=True)
class Tiering:
    """Split of one cluster into value x recency tiers at the cluster's own medians."""

    amount_threshold: float   # Amount >= threshold: the higher-value half
    recency_threshold: float  # Recency < threshold: the more recent half


def tier_of(amount: np.ndarray, recency: np.ndarray, tiering: Tiering) -> np.ndarray:
    """0 = high value & recent, 1 = high value & older, 2 = lower value & recent, 3 = lower value & older."""
    return 2 * (amount < tiering.amount_threshold) + (recency >= tiering.recency_threshold)


def tiers_of(features: pl.DataFrame, clusters: np.ndarray, tierings: dict[int, Tiering]) -> np.ndarray:
    """Each customer's tier in their cluster's tiering (tier_of); 0 in a cluster without one."""
    amount, recency = features["Amount"].to_numpy(), features["Recency"].to_numpy()
    tiers = np.zeros(len(clusters), dtype=np.int64)
    for cluster, tiering in tierings.items():
        members = clusters == cluster
        tiers[members] = tier_of(amount[members], recency[members], tiering)
    return tiers


@dataclass(frozen=True)
class SegmentModel:
    features: tuple[str, ...]
    center: np.ndarray                 # subtracted after log1p
    scale: np.ndarray                  # then divided by
    eps: float
    min_samples: int
    core_points: np.ndarray            # scaled coordinates of the core samples
    core_clusters: np.ndarray          # their cluster after folding (OUTLIER for folded clusters)
    tierings: dict[int, Tiering]       # refined clusters only
    segment_ids: dict[tuple[int, int], int]  # (cluster, tier or 0) -> campaign segment
    segment_names: dict[int, str] = field(default_factory=dict)
    # Per risk feature, its training quantiles at evenly spaced levels 0..1 (published models hold 1,001).
    risk_reference: dict[str, np.ndarray] = field(default_factory=dict)

    def scaled(self, features: pl.DataFrame) -> np.ndarray:
        """The clustering matrix of `features` in the model's coordinates."""
        return (np.log1p(features.select(self.features).to_numpy().astype(np.float64)) - self.center) / self.scale

    def clusters_of(self, matrix: np.ndarray) -> np.ndarray:
        """Cluster of the nearest core sample within eps, else OUTLIER."""
        if len(self.core_points) == 0:
            return np.full(len(matrix), OUTLIER, dtype=np.int64)
        distances, nearest = NearestNeighbors(n_neighbors=1).fit(self.core_points).kneighbors(matrix)
        return np.where(distances[:, 0] <= self.eps, self.core_clusters[nearest[:, 0]], OUTLIER).astype(np.int64)

    def segments_of(self, features: pl.DataFrame, clusters: np.ndarray) -> np.ndarray:
        """Campaign segment of each customer from their cluster and, in refined clusters, their tier."""
        tiers = tiers_of(features, clusters, self.tierings)
        return np.array(
            [self.segment_ids.get((cluster, tier), OUTLIER) for cluster, tier in zip(clusters.tolist(), tiers.tolist())],
            dtype=np.int64,
        )

    def assign(self, features: pl.DataFrame) -> pl.DataFrame:
        """SegmentAssignments of CustomerFeatures, with risk ranked against the training base."""
        clusters = self.clusters_of(self.scaled(features))
        segments = self.segments_of(features, clusters)
        names = {**self.segment_names, OUTLIER: self.segment_names.get(OUTLIER, "Outliers")}
        return features.select("CustomerID").with_columns(
            pl.Series("cluster", clusters), pl.Series("segment", segments),
            pl.Series("segment", segments).replace_strict(names, return_dtype=pl.String).alias("segment_name"),
            pl.Series("risk_score", weighted_risk(self.risk_reference, features)),
        ).with_columns(risk_level(pl.col("risk_score")))

    def to_files(self) -> dict[str, bytes]:
        """model.json and core_samples.parquet, ready to publish next to the run's other files."""
        document = {
            "format_version": FORMAT_VERSION,
            "features": list(self.features),
            "center": self.center.tolist(),
            "scale": self.scale.tolist(),
            "eps": self.eps,
            "min_samples": self.min_samples,
            "tierings": {str(cluster): vars(tiering) for cluster, tiering in self.tierings.items()},
            "segments": [
                {"cluster": cluster, "tier": tier, "segment": segment, "name": self.segment_names.get(segment, "")}
                for (cluster, tier), segment in sorted(self.segment_ids.items())
            ],
            "risk_reference": {name: values.tolist() for name, values in self.risk_reference.items()},
        }
        core = pl.DataFrame(self.core_points, schema=list(self.features), orient="row").with_columns(
            pl.Series("cluster", self.core_clusters, dtype=pl.Int64))
        buffer = io.BytesIO()
        core.write_parquet(buffer)
        return {MODEL_FILE: json.dumps(document, indent=2).encode(), CORE_SAMPLES_FILE: buffer.getvalue()}

    @classmethod
    def from_files(cls, files: dict[str, bytes]) -> "SegmentModel":
        """Inverse of to_files."""
        document = json.loads(files[MODEL_FILE])
        if document.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"model format {document.get('format_version')!r} is not {FORMAT_VERSION}")
        core = pl.read_parquet(io.BytesIO(files[CORE_SAMPLES_FILE]))
        features = tuple(document["features"])
        return cls(
            features=features,
            center=np.array(document["center"]),
            scale=np.array(document["scale"]),
            eps=document["eps"],
            min_samples=document["min_samples"],
            core_points=core.select(features).to_numpy().astype(np.float64).reshape(-1, len(features)),
            core_clusters=core["cluster"].to_numpy(),
            tierings={int(cluster): Tiering(**tiering) for cluster, tiering in document["tierings"].items()},
            segment_ids={(entry["cluster"], entry["tier"]): entry["segment"] for entry in document["segments"]},
            segment_names={entry["segment"]: entry["name"] for entry in document["segments"]},
            risk_reference={name: np.array(values) for name, values in document["risk_reference"].items()},
        )


def load_model(run_uri: str, s3: "S3Settings | None" = None) -> SegmentModel:
    """The model published in a run folder (local path or s3:// URI, reached as `s3` says)."""
    from tasks.publish import S3Settings, open_store  # storage stays at the edge; the model itself is pure

    try:
        store = open_store(run_uri, settings=s3 or S3Settings(), reading=True)
    except ValueError as error:  # a location no store can be opened at
        raise InputError(f"Model: {error}") from None
    files = {name: store.get(name) for name in (MODEL_FILE, CORE_SAMPLES_FILE)}
    missing = [name for name, data in files.items() if data is None]
    if missing:
        raise InputError(f"Model {run_uri}: {', '.join(missing)} not found; give the folder of a published run, "
                         "e.g. artifacts/runs/<run_id>.")
    try:
        return SegmentModel.from_files(files)
    except (ValueError, KeyError, TypeError, pl.exceptions.PolarsError) as error:
        raise InputError(f"Model {run_uri}: cannot be read ({error}).") from None
