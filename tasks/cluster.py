"""Clustering: DBSCAN on log-scaled behaviour features, then named, profiled segments.

Parameters when the user gives none:
- min_samples = 2 x the number of features (Sander et al., 1998), so a core point needs a
  neighbourhood that is dense in every dimension, not just a lucky pair.
- eps = the knee of the sorted k-distance curve (k = min_samples): the distance at which the
  curve turns from "points inside dense regions" to "points in sparse regions". The knee is the
  point farthest below the chord from the first to the last point of the normalised curve.
Clusters smaller than `min_segment_share` of the customers are folded into the outliers
group (-1): a campaign cannot be tailored to a handful of people, but they are still profiled.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import polars as pl
from sklearn.cluster import DBSCAN
from sklearn.decomposition import PCA
from sklearn.metrics import silhouette_score
from sklearn.neighbors import NearestNeighbors
from sklearn.preprocessing import RobustScaler, StandardScaler

from schemas import SegmentAssignments
from schemas.segment_assignments import OUTLIER, RISK_LEVELS
from tasks.contracts import enforce
from tasks.features import DEFAULT_CLUSTERING_FEATURES

PROFILED_FEATURES = (
    "Recency", "FrequencyPurchase", "Amount", "NumUniqueItems", "UniqueYears", "Tenure",
    "AvgOrderValue", "AvgBasketSize", "ReturnRate", "MeanInterpurchaseDays",
)
# Churn risk: how long since the last purchase weighs most, then how rarely and how little they buy.
RISK_WEIGHTS = {"Recency": 0.5, "FrequencyPurchase": -0.3, "Amount": -0.2}
SILHOUETTE_SAMPLE = 10_000


@dataclass(frozen=True)
class ClusteringOptions:
    """What the user can tune about clustering; None means "choose automatically"."""

    features: Sequence[str] = DEFAULT_CLUSTERING_FEATURES
    scaler: Literal["standard", "robust"] = "standard"
    eps: float | None = None
    min_samples: int | None = None
    min_segment_share: float = 0.01
    seed: int = 0


@dataclass(frozen=True)
class Segmentation:
    assignments: pl.DataFrame  # SegmentAssignments
    profiles: pl.DataFrame     # one row per segment, the outliers group included
    k_distances: np.ndarray    # ascending distance of each customer to its min_samples-th neighbour
    eps: float
    min_samples: int
    projection: pl.DataFrame   # CustomerID, pc1, pc2
    metrics: dict


def fit_segments(features: pl.DataFrame, options: ClusteringOptions = ClusteringOptions()) -> Segmentation:
    """Cluster CustomerFeatures with DBSCAN and describe every resulting segment."""
    matrix = scaled_matrix(features, options)
    min_samples = options.min_samples or 2 * matrix.shape[1]
    k_distances = sorted_k_distances(matrix, min_samples)
    eps = options.eps or knee_of(k_distances)
    raw_labels = DBSCAN(eps=eps, min_samples=min_samples).fit_predict(matrix)
    clusters = fold_small_clusters(raw_labels, round(options.min_segment_share * len(raw_labels)))
    labelled = features.with_columns(pl.Series("cluster", clusters), risk_score(features))
    readings = read_segments(labelled)
    assignments = enforce(
        SegmentAssignments,
        labelled.select(
            "CustomerID", "cluster", pl.col("cluster").alias("segment"),
            pl.col("cluster").replace_strict({k: r.name for k, r in readings.items()}, return_dtype=pl.String)
            .alias("segment_name"),
            "risk_score", risk_level(pl.col("risk_score")),
        ),
        "Clustering",
    )
    return Segmentation(
        assignments=assignments,
        profiles=profile_segments(features.join(assignments, on="CustomerID"), readings),
        k_distances=k_distances,
        eps=float(eps),
        min_samples=min_samples,
        projection=project_2d(features["CustomerID"], matrix),
        metrics=quality_metrics(matrix, clusters, options.seed),
    )


def scaled_matrix(features: pl.DataFrame, options: ClusteringOptions) -> np.ndarray:
    """log1p of the chosen features (all heavy-tailed counts or amounts), then scaled."""
    logged = np.log1p(features.select(options.features).to_numpy().astype(np.float64))
    scaler = StandardScaler() if options.scaler == "standard" else RobustScaler()
    return scaler.fit_transform(logged)


def sorted_k_distances(matrix: np.ndarray, k: int) -> np.ndarray:
    """Distance from each point to its k-th nearest neighbour, itself counted first as DBSCAN does."""
    distances, _ = NearestNeighbors(n_neighbors=min(k, len(matrix))).fit(matrix).kneighbors(matrix)
    return np.sort(distances[:, -1])


def knee_of(curve: np.ndarray) -> float:
    """Value at the knee of an ascending convex curve: the point farthest below its chord."""
    x = np.linspace(0.0, 1.0, len(curve))
    span = curve[-1] - curve[0]
    y = (curve - curve[0]) / span if span > 0 else x
    return float(curve[int(np.argmax(x - y))])


def fold_small_clusters(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Send clusters below min_size to OUTLIER and renumber the rest 0.. by decreasing size."""
    ids, sizes = np.unique(labels[labels != OUTLIER], return_counts=True)
    kept = [label for _, label in sorted(zip(-sizes, ids)) if sizes[ids == label][0] >= min_size]
    renumber = {label: new for new, label in enumerate(kept)}
    return np.array([renumber.get(label, OUTLIER) for label in labels], dtype=np.int64)


def risk_score(features: pl.DataFrame) -> pl.Expr:
    """Weighted percentile ranks (RISK_WEIGHTS), rescaled to 0 (safe) .. 1 (about to churn)."""
    score = sum(
        weight * pl.col(column).rank("average") / pl.len() if weight > 0
        else -weight * (1 - pl.col(column).rank("average") / pl.len())
        for column, weight in RISK_WEIGHTS.items()
    )
    return score.clip(0.0, 1.0).alias("risk_score")


def risk_level(score: pl.Expr) -> pl.Expr:
    """Low / Medium / High by thirds of the score."""
    return pl.when(score < 1 / 3).then(pl.lit("Low")).when(score < 2 / 3).then(pl.lit("Medium")).otherwise(pl.lit("High")).alias("risk")


def read_segments(labelled: pl.DataFrame) -> dict[int, "ProfileReading"]:
    """A reading (unique name, description, action) per cluster from its medians relative to the base."""
    base = labelled.select(pl.col(NAMING_FEATURES).median()).row(0, named=True)
    medians = labelled.group_by("cluster").agg(pl.col(NAMING_FEATURES).median()).sort("cluster")
    readings, names_seen = {}, {}
    for row in medians.iter_rows(named=True):
        reading = describe_profile(row, base, outliers=row["cluster"] == OUTLIER)
        names_seen[reading.name] = names_seen.get(reading.name, 0) + 1
        if names_seen[reading.name] > 1:
            reading = ProfileReading(f"{reading.name} ({names_seen[reading.name]})", reading.description, reading.action)
        readings[row["cluster"]] = reading
    return readings


@dataclass(frozen=True)
class ProfileReading:
    name: str
    description: str
    action: str


NAMING_FEATURES = ["Amount", "Recency", "FrequencyPurchase", "AvgOrderValue"]
BEHAVIOUR_ACTIONS = {
    "bulk buyers": "Trade offer: volume pricing and a named account contact.",
    "one-timers": "Second-purchase incentive within 30 days, with best-sellers from their first order.",
    "lapsed": "Win-back: a time-limited discount and what is new since their last order.",
    "loyal": "Reward loyalty: early access and a VIP tier; no discounts needed.",
    "regulars": "Cross-sell: bundles and products that complement what they buy.",
}
OUTLIERS_ACTION = "Review one by one: atypical customers, often the biggest accounts."


def describe_profile(medians: dict, base: dict, outliers: bool = False) -> ProfileReading:
    """Name, one-line description and campaign action from a segment's medians relative to the base."""
    value_ratio = medians["Amount"] / base["Amount"] if base["Amount"] else 1.0
    description = (
        f"Median spend {medians['Amount']:,.0f} ({value_ratio:.1f}x the base), "
        f"{medians['FrequencyPurchase']:.0f} orders, last purchase {medians['Recency']:.0f} days ago."
    )
    if outliers:
        return ProfileReading("Outliers", description, OUTLIERS_ACTION)
    value = "High-value" if value_ratio >= 2 else "Low-value" if value_ratio <= 0.5 else "Mid-value"
    if medians["AvgOrderValue"] >= 3 * base["AvgOrderValue"]:
        behaviour = "bulk buyers"
    elif medians["FrequencyPurchase"] <= 1:
        behaviour = "one-timers"
    elif medians["Recency"] >= 2 * base["Recency"]:
        behaviour = "lapsed"
    elif medians["FrequencyPurchase"] >= 2 * base["FrequencyPurchase"]:
        behaviour = "loyal"
    else:
        behaviour = "regulars"
    return ProfileReading(f"{value} {behaviour}", description, BEHAVIOUR_ACTIONS[behaviour])


def profile_segments(segmented: pl.DataFrame, readings: dict[int, ProfileReading]) -> pl.DataFrame:
    """Size, revenue share, medians and means of every feature, risk mix, description and action."""
    leading = ["segment", "segment_name", "description", "action", "customers", "customer_share", "revenue", "revenue_share"]
    return (
        segmented.group_by("segment", "segment_name")
        .agg(
            pl.len().cast(pl.Int64).alias("customers"),
            pl.col("Amount").sum().alias("revenue"),
            *(pl.col(column).median().cast(pl.Float64).alias(f"median_{column}") for column in PROFILED_FEATURES),
            *(pl.col(column).mean().cast(pl.Float64).alias(f"mean_{column}") for column in PROFILED_FEATURES),
            *((pl.col("risk") == level).mean().alias(f"risk_{level.lower()}") for level in RISK_LEVELS),
        )
        .with_columns(
            (pl.col("customers") / pl.col("customers").sum()).alias("customer_share"),
            (pl.col("revenue") / pl.col("revenue").sum()).alias("revenue_share"),
            pl.col("segment").replace_strict({k: r.description for k, r in readings.items()}, return_dtype=pl.String)
            .alias("description"),
            pl.col("segment").replace_strict({k: r.action for k, r in readings.items()}, return_dtype=pl.String)
            .alias("action"),
        )
        .sort(pl.col("segment") == OUTLIER, "segment")
        .select(*leading, pl.exclude(leading))
    )


def project_2d(customer_ids: pl.Series, matrix: np.ndarray) -> pl.DataFrame:
    """First two principal components of the scaled features, for the scatter chart."""
    components = PCA(n_components=2, random_state=0).fit_transform(matrix)
    return pl.DataFrame({"CustomerID": customer_ids, "pc1": components[:, 0], "pc2": components[:, 1]})


def quality_metrics(matrix: np.ndarray, clusters: np.ndarray, seed: int) -> dict:
    """Segment count, outlier share and silhouette on the non-outliers (sampled above SILHOUETTE_SAMPLE)."""
    inliers = clusters != OUTLIER
    segments = len(np.unique(clusters[inliers]))
    silhouette = None
    if segments >= 2:
        silhouette = float(silhouette_score(
            matrix[inliers], clusters[inliers], sample_size=min(SILHOUETTE_SAMPLE, int(inliers.sum())), random_state=seed,
        ))
    return {"segments": segments, "outlier_share": float(1 - inliers.mean()), "silhouette": silhouette}
