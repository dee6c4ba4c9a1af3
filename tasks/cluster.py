"""Clustering: DBSCAN on log-scaled behaviour features, refined into named campaign segments.

The rules, in the order they apply:
- Features: log1p of the clustering features (all heavy-tailed counts, days or money), then a
  standard or robust scaler. Binary features such as UniqueYears are not in the default set:
  alone they would split the base in two.
- min_samples = 2 x the number of features (Sander et al., 1998), so a core point needs a
  neighbourhood that is dense in every dimension, not just a lucky pair.
- eps: the knee of the sorted k-distance curve (k = min_samples) is the starting point: the
  point farthest below the chord of the normalised curve. Around it, EPS_MULTIPLIERS are tried;
  among those that leave at most `max_outlier_share` of customers as outliers, the one whose
  DBSCAN clusters are most stable under bootstrap resampling wins (stability rounded to two
  decimals; ties go to the larger eps, which leaves fewer outliers). If none stays within the cap,
  the one with the fewest outliers wins, and the outlier share reported shows it. A user-given eps skips it.
- Clusters smaller than `min_segment_share` of customers are folded into the outliers group
  (-1); beyond `max_segments` clusters, the smallest are folded too. Outliers are profiled and
  reported as their own group, never dropped.
- Campaign segments: when fewer than `min_segments` clusters remain, clusters are split, in
  order of their net revenue (where a finer campaign pays most), into four value x recency
  tiers at the cluster's own medians of Amount and Recency, until there are enough. A tier
  below `min_segment_share` (ties at a median can leave one nearly empty) joins the outliers. The
  assignment keeps both levels: `cluster` (DBSCAN's clusters, folded) and `segment` for the campaign.
- Labels: every customer gets the fitted model's rule (tasks/model.py): the cluster of the nearest
  core sample within eps. DBSCAN's own labels differ only for border points, which scikit-learn
  gives to whichever cluster reaches them first; this way the published model reproduces the
  published labels.
- Stability: the mean adjusted Rand index between the labels of the fit and those of models
  fitted on bootstrap resamples (duplicates as DBSCAN sample weights), both by the model's rule
  on the fitted customers; the eps search's outlier shares are the rule's too. The search scores
  clusters; the reported metric scores the campaign segments. A fit with one label only (all
  outliers, say) has no stability (None): the index calls any two such labelings identical.

Scale: clustering fits DBSCAN up to 31 times (6 eps candidates, 3 resamples for each within the
outlier cap, then 7 more resamples for the stability's 10), and on these features a neighbourhood
holds hundreds of customers, so the work grows faster than the base. The fits run on a thread per
core. Above `fit_sample` customers (default FIT_SAMPLE) it all runs on a seeded random sample of
that many: the k-distance knee, the eps search, the DBSCAN fit, the tier thresholds and the
stability resamples. Every customer, sampled or not, is then labelled by the
fitted model's own rule (the nearest core sample within eps, tasks/model.py), so the published
model reproduces the published labels. This is an approximation, and says so in
metrics["fitted_customers"]: a sample is sparser than the base, so its eps is wider and its
clusters can differ from those of one DBSCAN over every customer (fit_sample=None, exact but
slow). bench/ measures the agreement (ARI) of the two. The scaler, risk ranks, profiles and
projection always use every customer. Collapsing identical points into sample weights would keep
DBSCAN exact, but on the generator's customers only 0.2% share a scaled point (0.5% on a grid of
1e-3 standard deviations), so it would not save any time.
"""

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from itertools import chain, count
from typing import Literal, TypeVar

import numpy as np
import polars as pl
from sklearn.cluster import DBSCAN
from sklearn.decomposition import PCA
from sklearn.metrics import adjusted_rand_score, silhouette_score
from sklearn.neighbors import NearestNeighbors
from sklearn.preprocessing import RobustScaler, StandardScaler

from schemas import SegmentAssignments
from schemas.segment_assignments import OUTLIER, RISK_LEVELS
from tasks.contracts import enforce
from tasks.errors import InputError
from tasks.features import DEFAULT_CLUSTERING_FEATURES
from tasks.model import RISK_WEIGHTS, SegmentModel, Tiering, risk_level, tiers_of, weighted_risk

PROFILED_FEATURES = (
    "Recency", "FrequencyPurchase", "Amount", "NumUniqueItems", "UniqueYears", "Tenure",
    "AvgOrderValue", "AvgBasketSize", "ReturnRate", "MeanInterpurchaseDays",
)
EPS_MULTIPLIERS = (0.7, 0.85, 1.0, 1.15, 1.3, 1.5)
# Enough to tell a stable fit from a fragmented one while ranking eps candidates; the reported
# stability of the chosen fit uses `ClusteringOptions.resamples`.
SEARCH_RESAMPLES = 3
RISK_REFERENCE_QUANTILES = 1001
SILHOUETTE_SAMPLE = 10_000
# Customers DBSCAN is fitted on at most (see "Scale" in the module docstring): with it, 1M
# customers cluster in under a minute of CPU time, well inside 2 GB.
FIT_SAMPLE = 20_000

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class ClusteringOptions:
    """What the user can tune about clustering; None means "choose automatically"."""

    features: Sequence[str] = DEFAULT_CLUSTERING_FEATURES
    scaler: Literal["standard", "robust"] = "standard"
    eps: float | None = None
    min_samples: int | None = None
    min_segment_share: float = 0.01
    max_outlier_share: float = 0.15
    min_segments: int = 4
    max_segments: int = 8
    resamples: int = 10
    seed: int = 0
    fit_sample: int | None = FIT_SAMPLE  # None: always fit every customer, however many


@dataclass(frozen=True)
class Segmentation:
    assignments: pl.DataFrame  # SegmentAssignments
    profiles: pl.DataFrame     # one row per segment, the outliers group included
    model: SegmentModel
    k_distances: np.ndarray    # ascending distance of each fitted customer to its min_samples-th neighbour
    eps_search: list[dict]     # every eps tried: eps, clusters, segments, outlier_share, stability
    projection: pl.DataFrame   # CustomerID, pc1, pc2
    metrics: dict = field(default_factory=dict)

    @property
    def eps(self) -> float:
        return self.model.eps

    @property
    def min_samples(self) -> int:
        return self.model.min_samples


def fit_segments(features: pl.DataFrame, options: ClusteringOptions = ClusteringOptions()) -> Segmentation:
    """Cluster CustomerFeatures with DBSCAN, refine into campaign segments and describe each one."""
    min_samples = options.min_samples or 2 * len(options.features)
    if features.height < min_samples:
        raise InputError(
            f"Clustering: {features.height:,} customer(s) left after cleaning, but a DBSCAN cluster needs at least "
            f"min_samples = {min_samples} customers close together. Segment a larger input, or widen the country filter."
        )
    matrix, center, scale = scaled_matrix(features, options)
    rows = fit_rows(features.height, options)
    fit_matrix, fit_features = matrix[rows], features[rows]
    k_distances = sorted_k_distances(fit_matrix, min_samples)
    base = replace(options, min_samples=min_samples)
    resamples = Resamples(fit_matrix, fit_features, base, center, scale)
    if options.eps:
        model, eps_search = fit_model(fit_matrix, fit_features, options.eps, base, center, scale), []
    else:
        eps_search, model = search_eps(fit_matrix, fit_features, searched_knee(k_distances), base, center, scale,
                                       resamples)
    clusters = model.clusters_of(matrix)
    segments = model.segments_of(features, clusters)
    reference = risk_reference(features)
    labelled = features.with_columns(
        pl.Series("cluster", clusters), pl.Series("segment", segments), risk_score(features, reference))
    readings = read_segments(labelled, {segment: tier for (cluster, tier), segment in model.segment_ids.items()
                                        if cluster in model.tierings})
    model = replace(model, segment_names={segment: reading.name for segment, reading in readings.items()},
                    risk_reference=reference)
    assignments = enforce(
        SegmentAssignments,
        labelled.select(
            "CustomerID", "cluster", "segment",
            pl.col("segment").replace_strict(model.segment_names, return_dtype=pl.String).alias("segment_name"),
            "risk_score", risk_level(pl.col("risk_score")),
        ),
        "Clustering",
    )
    [resampled] = resamples.models([model.eps], options.resamples)
    stability = mean_agreement(
        segments[rows], in_parallel(lambda m: m.segments_of(fit_features, m.clusters_of(fit_matrix)), resampled))
    return Segmentation(
        assignments=assignments,
        profiles=profile_segments(features.join(assignments, on="CustomerID"), readings),
        model=model,
        k_distances=k_distances,
        eps_search=eps_search,
        projection=project_2d(features["CustomerID"], matrix),
        metrics={**quality_metrics(matrix, clusters, segments, options.seed), "stability": stability,
                 "fitted_customers": len(rows)},
    )


def fit_rows(customers: int, options: ClusteringOptions) -> np.ndarray:
    """Rows DBSCAN is fitted on: every customer, or a seeded random sample of `options.fit_sample` of them."""
    if options.fit_sample is None or customers <= options.fit_sample:
        return np.arange(customers)
    return np.sort(np.random.default_rng(options.seed).choice(customers, options.fit_sample, replace=False))


def scaled_matrix(features: pl.DataFrame, options: ClusteringOptions) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """log1p of the chosen features, scaled; also the scaler's centre and scale for the model."""
    logged = np.log1p(features.select(options.features).to_numpy().astype(np.float64))
    scaler = (StandardScaler() if options.scaler == "standard" else RobustScaler()).fit(logged)
    center = scaler.mean_ if options.scaler == "standard" else scaler.center_
    return scaler.transform(logged), np.asarray(center, dtype=np.float64), np.asarray(scaler.scale_, dtype=np.float64)


def sorted_k_distances(matrix: np.ndarray, k: int) -> np.ndarray:
    """Distance from each point to its k-th nearest neighbour, itself counted first as DBSCAN does."""
    distances, _ = NearestNeighbors(n_neighbors=min(k, len(matrix))).fit(matrix).kneighbors(matrix)
    return np.sort(distances[:, -1])


def searched_knee(k_distances: np.ndarray) -> float:
    """knee_of the k-distances; an InputError when it is 0, where customers share their features and eps would be 0."""
    knee = knee_of(k_distances)
    if knee <= 0:
        raise InputError(
            "Clustering: most customers have identical clustering features, so the k-distance curve has no knee "
            "to take eps from. Give eps explicitly, or segment a more varied input."
        )
    return knee


def knee_of(curve: np.ndarray) -> float:
    """Value at the knee of an ascending convex curve: the point farthest below its chord."""
    x = np.linspace(0.0, 1.0, len(curve))
    span = curve[-1] - curve[0]
    y = (curve - curve[0]) / span if span > 0 else x
    return float(curve[int(np.argmax(x - y))])


def search_eps(
    matrix: np.ndarray, features: pl.DataFrame, knee: float, options: ClusteringOptions,
    center: np.ndarray, scale: np.ndarray, resamples: "Resamples",
) -> tuple[list[dict], SegmentModel]:
    """Try EPS_MULTIPLIERS x knee; keep the most stable fit within the outlier cap (see module docstring)."""
    eps_values = [knee * multiplier for multiplier in EPS_MULTIPLIERS]

    def fitted_and_labelled(eps: float) -> tuple[SegmentModel, np.ndarray, np.ndarray]:
        model = fit_model(matrix, features, eps, options, center, scale)
        clusters = model.clusters_of(matrix)
        return model, clusters, model.segments_of(features, clusters)

    fits = in_parallel(fitted_and_labelled, eps_values)
    outlier_shares = [float(np.mean(segments == OUTLIER)) for _, _, segments in fits]
    within_cap = [eps for eps, share in zip(eps_values, outlier_shares) if share <= options.max_outlier_share]
    refits = [model for models in resamples.models(within_cap, SEARCH_RESAMPLES) for model in models]
    labels = in_parallel(lambda model: model.clusters_of(matrix), refits)
    resampled = {eps: labels[start:start + SEARCH_RESAMPLES]
                 for eps, start in zip(within_cap, range(0, len(labels), SEARCH_RESAMPLES))}
    tried, best, best_key = [], None, None
    for eps, (model, clusters, segments), outlier_share in zip(eps_values, fits, outlier_shares):
        stability = mean_agreement(clusters, resampled[eps]) if eps in resampled else None
        tried.append({"eps": eps, "clusters": int(clusters.max() + 1), "segments": int(segments.max() + 1),
                      "outlier_share": outlier_share, "stability": stability})
        key = (eps in resampled, round(stability or 0.0, 2), -outlier_share)
        if best_key is None or key >= best_key:
            best, best_key = model, key
    return tried, best


def fit_model(
    matrix: np.ndarray, features: pl.DataFrame, eps: float, options: ClusteringOptions,
    center: np.ndarray, scale: np.ndarray, weights: np.ndarray | None = None,
) -> SegmentModel:
    """DBSCAN, small clusters folded, large ones tiered until the campaign has enough segments: the model.

    Its labels are the model's own rule's (model.clusters_of): see "Labels" in the module docstring.
    """
    # A ball tree finds these neighbourhoods, hundreds of customers each, in about 60% of the time the
    # k-d tree that DBSCAN picks by default takes; both are exact, and gave the same labels on every data set tried.
    # Without weights DBSCAN counts each neighbourhood's length instead of summing its weights in Python.
    dbscan = DBSCAN(eps=eps, min_samples=options.min_samples, algorithm="ball_tree").fit(matrix, sample_weight=weights)
    weights = np.ones(len(matrix)) if weights is None else weights
    min_size = options.min_segment_share * weights.sum()
    clusters = fold_small_clusters(dbscan.labels_, min_size, options.max_segments, weights)
    tierings = plan_tierings(features, clusters, weights, options)
    tiers = tiers_of(features, clusters, tierings)
    return SegmentModel(
        features=tuple(options.features), center=center, scale=scale, eps=float(eps),
        min_samples=options.min_samples, core_points=matrix[dbscan.core_sample_indices_],
        core_clusters=clusters[dbscan.core_sample_indices_], tierings=tierings,
        segment_ids=number_segments(clusters, tiers, weights, min_size),
    )


def fold_small_clusters(
    labels: np.ndarray, min_size: float, max_clusters: int | None = None, weights: np.ndarray | None = None,
) -> np.ndarray:
    """Send clusters below min_size (or beyond the max_clusters largest) to OUTLIER; renumber the rest by size."""
    weights = np.ones(len(labels)) if weights is None else weights
    ids = np.unique(labels[labels != OUTLIER])
    sizes = np.array([weights[labels == label].sum() for label in ids])
    kept = [label for size, label in sorted(zip(-sizes, ids)) if -size >= min_size][:max_clusters]
    renumber = {label: new for new, label in enumerate(kept)}
    return np.array([renumber.get(label, OUTLIER) for label in labels.tolist()], dtype=np.int64)


def plan_tierings(
    features: pl.DataFrame, clusters: np.ndarray, weights: np.ndarray, options: ClusteringOptions,
) -> dict[int, Tiering]:
    """Value x recency tiers for the highest-revenue clusters while the campaign has too few segments."""
    amount, recency = features["Amount"].to_numpy(), features["Recency"].to_numpy()
    ids = np.unique(clusters[clusters != OUTLIER])
    revenue = {cluster: float((amount * weights)[clusters == cluster].sum()) for cluster in ids.tolist()}
    segment_count, tierings = len(ids), {}
    for cluster in sorted(revenue, key=lambda cluster: (-revenue[cluster], cluster)):
        if segment_count >= options.min_segments or segment_count + 3 > options.max_segments:
            break
        members = clusters == cluster
        tierings[cluster] = Tiering(
            amount_threshold=weighted_median(amount[members], weights[members]),
            recency_threshold=weighted_median(recency[members], weights[members]),
        )
        segment_count += 3
    return tierings


def weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    """The lower weighted median: the first value at which half of the weight is reached."""
    order = np.argsort(values, kind="stable")
    cumulative = np.cumsum(weights[order])
    return float(values[order][np.searchsorted(cumulative, cumulative[-1] / 2)])


def number_segments(
    clusters: np.ndarray, tiers: np.ndarray, weights: np.ndarray, min_size: float = 0.0,
) -> dict[tuple[int, int], int]:
    """Segment ids 0.. by decreasing size for every (cluster, tier) of at least min_size; smaller tiers get none."""
    inliers = clusters != OUTLIER
    pairs = pl.DataFrame({"cluster": clusters[inliers], "tier": tiers[inliers], "weight": weights[inliers]})
    sizes = pairs.group_by("cluster", "tier").agg(pl.col("weight").sum()).filter(pl.col("weight") >= min_size).sort(
        "weight", "cluster", "tier", descending=[True, False, False])
    return {(cluster, tier): segment for segment, (cluster, tier) in enumerate(sizes.select("cluster", "tier").iter_rows())}


class Resamples:
    """Bootstrap resamples of the fitted customers, drawn from the seed, and models fitted on them.

    Each resample's drawn customers are weighted by how often they were drawn. Resample i is the same
    however many are drawn, so the eps search's resamples are the stability's first ones too: each
    (eps, resample) pair is fitted once.
    """

    def __init__(self, matrix: np.ndarray, features: pl.DataFrame, options: ClusteringOptions,
                 center: np.ndarray, scale: np.ndarray) -> None:
        self._matrix, self._features, self._options, self._center, self._scale = matrix, features, options, center, scale
        self._generator = np.random.default_rng(options.seed)
        self._draws: list[tuple[np.ndarray, np.ndarray]] = []  # drawn rows, and how often each was drawn
        self._models: dict[tuple[float, int], SegmentModel] = {}

    def models(self, eps_values: Sequence[float], count: int) -> list[list[SegmentModel]]:
        """For each eps, the models fitted on the first `count` resamples."""
        points = len(self._matrix)
        while len(self._draws) < count:
            self._draws.append(np.unique(self._generator.integers(0, points, points), return_counts=True))
        missing = [(eps, draw) for eps in eps_values for draw in range(count) if (eps, draw) not in self._models]
        self._models.update(zip(missing, in_parallel(self._fitted, missing)))
        return [[self._models[eps, draw] for draw in range(count)] for eps in eps_values]

    def _fitted(self, eps_and_draw: tuple[float, int]) -> SegmentModel:
        eps, draw = eps_and_draw
        drawn, counts = self._draws[draw]
        return fit_model(self._matrix[drawn], self._features[drawn], eps, self._options, self._center, self._scale,
                         weights=counts)


def in_parallel(work: Callable[[T], R], items: Sequence[T]) -> list[R]:
    """work(item) for every item, in order, on a thread per core.

    DBSCAN fits are most of clustering's time, spent mostly in scikit-learn's neighbour searches,
    which release the GIL: two cores fit the eps search's models in about 60% of one core's time.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1  # macOS has no affinity
    with ThreadPoolExecutor(max_workers=cores) as pool:
        return list(pool.map(work, items))


def mean_agreement(reference: np.ndarray, labelings: list[np.ndarray]) -> float | None:
    """Mean adjusted Rand index of each labeling against the reference; None for a reference of one label.

    Two one-label labelings agree perfectly by the index, which says nothing about stability.
    """
    if len(np.unique(reference)) < 2:
        return None
    return float(np.mean([adjusted_rand_score(reference, labels) for labels in labelings]))


def risk_reference(features: pl.DataFrame) -> dict[str, np.ndarray]:
    """Quantiles of each risk feature, so new customers are ranked against the training base."""
    levels = np.linspace(0.0, 1.0, RISK_REFERENCE_QUANTILES)
    return {column: np.quantile(features[column].to_numpy().astype(np.float64), levels) for column in RISK_WEIGHTS}


def risk_score(features: pl.DataFrame, reference: dict[str, np.ndarray]) -> pl.Series:
    """RISK_WEIGHTS applied to each customer's percentile rank in the base `reference` summarises (risk_reference),
    ranked as the model ranks new customers: against the quantiles it stores."""
    return pl.Series("risk_score", weighted_risk(reference, features))


def read_segments(labelled: pl.DataFrame, tier_of_segment: dict[int, int] | None = None) -> dict[int, "ProfileReading"]:
    """A reading (unique name, description, action) per segment from its medians relative to the base.

    Tiers of one cluster often read alike: segments that would share a name get their tier's
    qualifier (e.g. "higher spend, recent"), and any name still taken gets a number.
    """
    tier_of_segment = tier_of_segment or {}
    base = naming_base(labelled)
    medians = labelled.group_by("segment").agg(pl.col(NAMING_FEATURES).median()).sort("segment")
    readings = {row["segment"]: describe_profile(row, base, outliers=row["segment"] == OUTLIER)
                for row in medians.iter_rows(named=True)}
    shared = {name for name in (r.name for r in readings.values()) if sum(r.name == name for r in readings.values()) > 1}
    taken = set()
    for segment, reading in readings.items():
        name = reading.name
        if name in shared and segment in tier_of_segment:
            name = f"{name} ({TIER_QUALIFIERS[tier_of_segment[segment]]})"
        name = next(candidate for candidate in chain([name], (f"{name} ({n})" for n in count(2)))
                    if candidate not in taken)
        taken.add(name)
        readings[segment] = ProfileReading(name, reading.description, reading.action)
    return readings


@dataclass(frozen=True)
class ProfileReading:
    name: str
    description: str
    action: str


NAMING_FEATURES = ["Amount", "Recency", "FrequencyPurchase", "AvgOrderValue"]
TIER_QUALIFIERS = {0: "higher spend, recent", 1: "higher spend, lapsing", 2: "lower spend, recent", 3: "lower spend, lapsing"}
# Median spend relative to the base's median spend, highest tier first.
VALUE_TIERS = (("Top-value", 5.0), ("High-value", 1.5), ("Mid-value", 2 / 3), ("Low-value", 0.0))
BEHAVIOUR_ACTIONS = {
    "bulk buyers": "Trade offer: volume pricing and a named account contact.",
    "one-timers": "Second-purchase incentive within 30 days, with best-sellers from their first order.",
    "lapsed": "Win-back: a time-limited discount and what is new since their last order.",
    "loyal": "Reward loyalty: early access and a VIP tier; no discounts needed.",
    "regulars": "Cross-sell: bundles and products that complement what they buy.",
}
OUTLIERS_ACTION = "Review one by one: atypical customers, often the biggest accounts."


def naming_base(labelled: pl.DataFrame) -> dict[str, float]:
    """The typical customer segments are named against: the base's median of each naming feature, or its mean
    where the median is 0 (most customers' returns cancelling their purchases, or most buying on the snapshot
    day). Against 0, the slightest spend would read as many times the base, and a purchase yesterday as lapsed.
    """
    medians = labelled.select(pl.col(NAMING_FEATURES).median()).row(0, named=True)
    means = labelled.select(pl.col(NAMING_FEATURES).mean()).row(0, named=True)
    return {feature: medians[feature] or means[feature] for feature in NAMING_FEATURES}


def describe_profile(medians: dict, base: dict, outliers: bool = False) -> ProfileReading:
    """Name, one-line description and campaign action from a segment's medians relative to the base (naming_base)."""
    value_ratio = multiple_of(medians["Amount"], base["Amount"])
    description = (
        f"Median spend {medians['Amount']:,.0f} ({value_ratio:.1f}x the base), "
        f"{medians['FrequencyPurchase']:.0f} orders, last purchase {medians['Recency']:.0f} days ago."
    )
    if outliers:
        return ProfileReading("Outliers", description, OUTLIERS_ACTION)
    value = next(tier for tier, floor in VALUE_TIERS if value_ratio >= floor)
    if multiple_of(medians["AvgOrderValue"], base["AvgOrderValue"]) >= 3:
        behaviour = "bulk buyers"
    elif medians["FrequencyPurchase"] <= 1:
        behaviour = "one-timers"
    elif multiple_of(medians["Recency"], base["Recency"]) >= 2:
        behaviour = "lapsed"
    elif multiple_of(medians["FrequencyPurchase"], base["FrequencyPurchase"]) >= 2:
        behaviour = "loyal"
    else:
        behaviour = "regulars"
    return ProfileReading(f"{value} {behaviour}", description, BEHAVIOUR_ACTIONS[behaviour])


def multiple_of(value: float, base: float) -> float:
    """A segment's median as a multiple of the base's; 1 for a base of 0, which naming_base gives only when every
    customer's value is 0 (the features are non-negative), the segment's too."""
    return value / base if base else 1.0


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
        .sort(pl.col("segment") == OUTLIER, "segment")  # before the shares: group_by's order would vary their sums
        .with_columns(
            (pl.col("customers") / pl.col("customers").sum()).alias("customer_share"),
            (pl.col("revenue") / pl.col("revenue").sum()).alias("revenue_share"),
            pl.col("segment").replace_strict({k: r.description for k, r in readings.items()}, return_dtype=pl.String)
            .alias("description"),
            pl.col("segment").replace_strict({k: r.action for k, r in readings.items()}, return_dtype=pl.String)
            .alias("action"),
        )
        .select(*leading, pl.exclude(leading))
    )


def project_2d(customer_ids: pl.Series, matrix: np.ndarray) -> pl.DataFrame:
    """First two principal components of the scaled features, for the scatter chart."""
    components = PCA(n_components=2, random_state=0).fit_transform(matrix)
    return pl.DataFrame({"CustomerID": customer_ids, "pc1": components[:, 0], "pc2": components[:, 1]})


def quality_metrics(matrix: np.ndarray, clusters: np.ndarray, segments: np.ndarray, seed: int) -> dict:
    """Cluster and segment counts, outlier share and silhouette of the segments on the non-outliers."""
    inliers = segments != OUTLIER
    segment_count = len(np.unique(segments[inliers]))
    silhouette = None
    if segment_count >= 2:
        silhouette = float(silhouette_score(
            matrix[inliers], segments[inliers], sample_size=min(SILHOUETTE_SAMPLE, int(inliers.sum())), random_state=seed,
        ))
    return {
        "clusters": len(np.unique(clusters[clusters != OUTLIER])),
        "segments": segment_count,
        "outlier_share": float(1 - inliers.mean()),
        "silhouette": silhouette,
    }
