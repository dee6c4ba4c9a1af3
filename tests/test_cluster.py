"""Clustering: parameter choice, folding, campaign tiers, naming, risk, stability and the contract."""

import numpy as np
import polars as pl
import pytest
from sklearn.cluster import DBSCAN
from sklearn.metrics import adjusted_rand_score
from sklearn.tree import DecisionTreeClassifier

from schemas import SegmentAssignments
from schemas.segment_assignments import OUTLIER
from tasks.clean import CleaningOptions, clean_transactions
from tasks.cluster import (
    EPS_MULTIPLIERS, NAMING_FEATURES, ClusteringOptions, describe_profile, fit_segments, fold_small_clusters, knee_of,
    mean_agreement, naming_base, number_segments, plan_tierings, read_segments, risk_reference, risk_score,
    weighted_median,
)
from tasks.errors import InputError
from tasks.features import build_features
from tasks.generate import generate_transactions
from tasks.ingest import load_transactions
from tasks.model import SegmentModel, Tiering, tier_of
from tests.core_samples import assert_core_samples_keep_their_labels


def test_knee_is_the_last_point_before_the_curve_shoots_up():
    # Normalised: x = 0, .25, .5, .75, 1 and y = 0, .034, .069, .103, 1; x - y peaks at .647 on the 4th point.
    assert knee_of(np.array([0.1, 0.2, 0.3, 0.4, 3.0])) == 0.4


def test_knee_of_a_flat_curve_is_its_value():
    assert knee_of(np.full(10, 0.5)) == 0.5


def test_small_clusters_are_folded_into_outliers_and_the_rest_renumbered_by_size():
    labels = np.array([0, 0, 1, 1, 1, 2, -1, 1, 0, 2])
    # sizes: 0 -> 3, 1 -> 4, 2 -> 2; with min_size 3 cluster 2 folds, 1 becomes 0 (largest), 0 becomes 1.
    assert fold_small_clusters(labels, 3).tolist() == [1, 1, 0, 0, 0, -1, -1, 0, 1, -1]
    # At most one cluster: only the largest stays.
    assert fold_small_clusters(labels, 1, max_clusters=1).tolist() == [-1, -1, 0, 0, 0, -1, -1, 0, -1, -1]
    # Weights count as that many customers: cluster 2 weighs 2 + 5 = 7 and becomes the largest.
    weights = np.array([1, 1, 1, 1, 1, 2, 1, 1, 1, 5])
    assert fold_small_clusters(labels, 4, weights=weights).tolist() == [-1, -1, 1, 1, 1, 0, -1, 1, -1, 0]
    assert labels.tolist() == [0, 0, 1, 1, 1, 2, -1, 1, 0, 2]  # input untouched


def test_weighted_median_is_the_first_value_reaching_half_the_weight():
    assert weighted_median(np.array([5.0, 1.0, 3.0]), np.ones(3)) == 3.0
    # Weights 1, 1, 4 on 1, 3, 5: half of 6 is reached at 5.
    assert weighted_median(np.array([5.0, 1.0, 3.0]), np.array([4.0, 1.0, 1.0])) == 5.0


def test_tiers_split_value_then_recency():
    tiering = Tiering(amount_threshold=100.0, recency_threshold=30.0)
    amount = np.array([150.0, 150.0, 50.0, 50.0, 100.0])
    recency = np.array([10, 60, 10, 60, 30])
    # 0 = higher value & recent, 1 = higher & older, 2 = lower & recent, 3 = lower & older; thresholds go up.
    assert tier_of(amount, recency, tiering).tolist() == [0, 1, 2, 3, 1]


def tiny_features(amount: list[float], recency: list[int]) -> pl.DataFrame:
    return pl.DataFrame({"Amount": amount, "Recency": recency})


def test_only_the_largest_clusters_are_tiered_until_there_are_enough_segments():
    features = tiny_features([10.0, 20.0, 30.0, 40.0, 5.0, 6.0], [1, 2, 3, 4, 5, 6])
    clusters = np.array([0, 0, 0, 0, 1, 1])
    options = ClusteringOptions(min_segments=4, max_segments=8)
    tierings = plan_tierings(features, clusters, np.ones(6), options)
    # Two clusters: splitting the largest gives 2 + 3 = 5 segments, enough; its medians are 20 and 2.
    assert tierings == {0: Tiering(amount_threshold=20.0, recency_threshold=2.0)}
    four = np.array([0, 0, 1, 1, 2, 3])
    assert plan_tierings(features, four, np.ones(6), options) == {}


def test_segments_are_numbered_by_size():
    clusters = np.array([0, 0, 0, 0, 1, 1, 1, -1])
    tiers = np.array([0, 0, 2, 2, 0, 0, 0, 0])
    # sizes: (1, 0) -> 3, (0, 0) -> 2, (0, 2) -> 2 (tie broken by cluster, then tier); outliers get no id.
    assert number_segments(clusters, tiers, np.ones(8)) == {(1, 0): 0, (0, 0): 1, (0, 2): 2}


def test_risk_is_high_for_a_lapsed_rare_small_buyer_and_low_for_the_opposite():
    frame = pl.DataFrame({"Recency": [300, 5, 100], "FrequencyPurchase": [1, 40, 5], "Amount": [10.0, 9000.0, 500.0]})
    scores = risk_score(frame, risk_reference(frame)).to_list()
    # Percentiles run from 0 (the base's lowest) to 1 (its highest): lapsed = 0.5 * 1 + 0.3 * (1 - 0) + 0.2 * (1 - 0),
    # loyal = 0.5 * 0 + 0.3 * (1 - 1) + 0.2 * (1 - 1), the other all in the middle.
    assert scores == pytest.approx([1.0, 0.0, 0.5])


def test_tied_customers_share_the_middle_of_their_percentiles():
    frame = pl.DataFrame({"Recency": [10, 20, 20, 20, 30], "FrequencyPurchase": [1, 1, 1, 1, 1],
                          "Amount": [5.0, 5.0, 5.0, 5.0, 5.0]})
    # Recency 20 spans the base's percentiles 1/4 to 3/4; all tie on the rest, at 1/2.
    assert risk_score(frame, risk_reference(frame)).to_list() == pytest.approx([0.25, 0.5, 0.5, 0.5, 0.75])


@pytest.mark.parametrize(
    ("medians", "expected"),
    [
        ({"Amount": 5000, "Recency": 10, "FrequencyPurchase": 20, "AvgOrderValue": 250}, "Top-value loyal"),
        ({"Amount": 1000, "Recency": 10, "FrequencyPurchase": 5, "AvgOrderValue": 200}, "High-value loyal"),
        ({"Amount": 100, "Recency": 200, "FrequencyPurchase": 1, "AvgOrderValue": 100}, "Low-value one-timers"),
        ({"Amount": 600, "Recency": 250, "FrequencyPurchase": 3, "AvgOrderValue": 200}, "Mid-value lapsed"),
        ({"Amount": 9000, "Recency": 40, "FrequencyPurchase": 4, "AvgOrderValue": 2250}, "Top-value bulk buyers"),
        ({"Amount": 700, "Recency": 40, "FrequencyPurchase": 3, "AvgOrderValue": 230}, "Mid-value regulars"),
    ],
)
def test_names_follow_the_profile_relative_to_the_base(medians, expected):
    base = {"Amount": 650, "Recency": 50, "FrequencyPurchase": 2, "AvgOrderValue": 280}
    reading = describe_profile(medians, base)
    assert reading.name == expected
    assert reading.action


def naming_frame(**features: list[float]) -> pl.DataFrame:
    """Customers of segment 0 with the naming features given, the others at 1."""
    rows = len(next(iter(features.values())))
    return pl.DataFrame({"segment": [0] * rows, **{name: features.get(name, [1.0] * rows) for name in NAMING_FEATURES}})


def test_the_base_is_its_mean_where_its_median_is_0_and_else_its_median():
    # Most customers' returns cancel their purchases (spend 0), and most bought on the snapshot day (Recency 0).
    base = naming_base(naming_frame(Amount=[0.0, 0.0, 0.0, 400.0], Recency=[0.0, 0.0, 0.0, 80.0],
                                    FrequencyPurchase=[1.0, 2.0, 3.0, 4.0]))
    assert base == {"Amount": 100.0, "Recency": 20.0, "FrequencyPurchase": 2.5, "AvgOrderValue": 1.0}


def test_segments_are_named_against_the_base_mean_where_its_median_is_0():
    # Six of ten customers' returns cancelled their purchases: the median spend is 0, the mean 0.4.
    labelled = naming_frame(Amount=[0.0] * 6 + [1.0] * 4, Recency=[10.0] * 10, FrequencyPurchase=[2.0] * 10,
                            AvgOrderValue=[0.0] * 6 + [0.5] * 4).with_columns(segment=pl.Series([0] * 6 + [1] * 4))
    names = {segment: reading.name for segment, reading in read_segments(labelled).items()}
    # 2.5 times the mean: High-value (against 0 itself it was Top-value, and bulk buyers for any order value).
    assert names == {0: "Low-value regulars", 1: "High-value regulars"}


def test_a_base_where_every_customer_has_0_is_level_with_its_segments():
    labelled = naming_frame(Amount=[0.0] * 4, AvgOrderValue=[0.0] * 4, FrequencyPurchase=[2.0] * 4)
    [reading] = read_segments(labelled).values()
    assert reading.name == "Mid-value regulars"  # not "bulk buyers" for an order value of 3 x 0
    assert reading.description.startswith("Median spend 0 (1.0x the base)")


def blobs(seed: int = 0) -> pl.DataFrame:
    """Three well separated groups of 120 customers in (Recency, Frequency, Amount) plus two far-off points."""
    rng = np.random.default_rng(seed)
    centres = [(20, 30, 8000.0), (200, 1, 80.0), (60, 5, 900.0)]
    rows = []
    for recency, frequency, amount in centres:
        for _ in range(120):
            rows.append((max(0, int(recency * rng.lognormal(0, 0.1))), frequency, amount * rng.lognormal(0, 0.1)))
    rows += [(1, 400, 500000.0), (365, 200, 2.0)]
    recency, frequency, amount = map(list, zip(*rows))
    n = len(rows)
    return pl.DataFrame({
        "CustomerID": list(range(10_000, 10_000 + n)), "Country": ["United Kingdom"] * n,
        "Recency": recency, "FrequencyPurchase": frequency, "Amount": amount,
        "NumUniqueItems": frequency, "UniqueYears": [1] * n, "Tenure": [r + 10 for r in recency],
        "AvgOrderValue": [a / f for a, f in zip(amount, frequency)], "AvgBasketSize": [10.0] * n,
        "ReturnRate": [0.0] * n, "MeanInterpurchaseDays": [30.0] * n,
    })


THREE_FEATURES = ClusteringOptions(features=("Recency", "FrequencyPurchase", "Amount"))


@pytest.fixture(scope="module")
def blob_segments():
    return fit_segments(blobs(), THREE_FEATURES)


def test_separated_groups_become_clusters_and_far_points_outliers(blob_segments):
    SegmentAssignments.validate(blob_segments.assignments)
    clusters = blob_segments.assignments["cluster"].to_numpy()
    assert blob_segments.metrics["clusters"] == 3
    assert set(clusters[-2:]) == {-1}
    for start in (0, 120, 240):
        group = clusters[start:start + 120]
        assert np.mean(group == np.bincount(group[group >= 0]).argmax()) > 0.95


def test_three_clusters_are_refined_into_campaign_segments(blob_segments):
    assignments = blob_segments.assignments
    # Three clusters are too few: the largest is split into four value x recency tiers, 3 + 3 = 6.
    assert blob_segments.metrics["segments"] == 6
    nested = assignments.filter(pl.col("segment") >= 0).group_by("segment").agg(pl.col("cluster").n_unique())
    assert nested["cluster"].to_list() == [1] * 6  # every segment lies inside one cluster
    profiles = blob_segments.profiles
    assert profiles["segment_name"].is_unique().all()
    assert "Outliers" in profiles["segment_name"].to_list()
    assert profiles["customers"].sum() == 362
    assert profiles["revenue_share"].sum() == pytest.approx(1.0)


def test_automatic_eps_is_searched_around_the_knee_within_the_outlier_cap(blob_segments):
    search = blob_segments.eps_search
    assert len(search) == len(EPS_MULTIPLIERS)
    knee = knee_of(blob_segments.k_distances)
    assert [entry["eps"] for entry in search] == pytest.approx([knee * m for m in EPS_MULTIPLIERS])
    chosen = next(entry for entry in search if entry["eps"] == blob_segments.eps)
    assert chosen["outlier_share"] <= 0.15
    eligible = [entry["stability"] for entry in search if entry["stability"] is not None]
    assert chosen["stability"] == max(eligible) or round(chosen["stability"], 2) == round(max(eligible), 2)
    assert blob_segments.min_samples == 6  # 2 x three features


def test_user_given_eps_and_min_samples_override_the_automatic_choice():
    result = fit_segments(blobs(), ClusteringOptions(eps=0.25, min_samples=4, resamples=2))
    assert (result.eps, result.min_samples, result.eps_search) == (0.25, 4, [])


def test_the_model_reproduces_the_labels_of_every_core_sample(blob_segments):
    features = blobs()
    assigned = blob_segments.model.assign(features)
    assert_core_samples_keep_their_labels(blob_segments.model, features, blob_segments.assignments, assigned)


def test_training_customers_assigned_back_get_the_risk_they_were_given(blob_segments):
    features = blobs()
    assert features["FrequencyPurchase"].n_unique() == 5 and features["Recency"].n_unique() < 150  # many ties
    restored = SegmentModel.from_files(blob_segments.model.to_files())  # as assign loads it from a published run
    assigned = restored.assign(features)
    assert assigned["risk_score"].equals(blob_segments.assignments["risk_score"])
    assert assigned["risk"].equals(blob_segments.assignments["risk"])


def test_the_model_round_trips_through_json_and_parquet(blob_segments):
    files = blob_segments.model.to_files()
    assert set(files) == {"model/model.json", "model/core_samples.parquet"}
    restored = SegmentModel.from_files(files)
    assert restored.assign(blobs()).equals(blob_segments.model.assign(blobs()))
    with pytest.raises(ValueError, match="model format"):
        SegmentModel.from_files({**files, "model/model.json": b'{"format_version": 99}'})


def test_stability_is_reported_and_high_for_clear_structure(blob_segments):
    assert 0.9 <= blob_segments.metrics["stability"] <= 1.0


def test_features_are_not_modified():
    features = blobs()
    before = features.clone()
    fit_segments(features, ClusteringOptions(resamples=2))
    assert features.equals(before)


def test_planted_archetypes_are_recovered():
    generated = generate_transactions(50_000, seed=1)
    cleaned = clean_transactions(generated.transactions)
    result = fit_segments(build_features(cleaned.lines, cleaned.returns))
    truth = result.assignments.join(generated.archetypes, on="CustomerID")
    assert adjusted_rand_score(truth["archetype"], truth["segment"]) >= 0.9


@pytest.mark.slow
@pytest.mark.parametrize("countries", [(), ("United Kingdom",)], ids=["all countries", "United Kingdom"])
def test_real_data_gives_usable_stable_campaign_segments(real_data, countries):
    cleaned = clean_transactions(load_transactions(real_data).transactions, CleaningOptions(countries=countries))
    features = build_features(cleaned.lines, cleaned.returns)
    result = fit_segments(features)
    shares = result.profiles.filter(pl.col("segment") >= 0)["customer_share"]
    assert 4 <= result.metrics["segments"] <= 8
    assert shares.min() >= 0.02
    assert result.metrics["outlier_share"] <= 0.15
    assert result.metrics["stability"] >= 0.80
    # Not the seed's failure: UniqueYears alone must not explain the segments.
    labelled = features.join(result.assignments, on="CustomerID")
    tree = DecisionTreeClassifier(max_depth=1).fit(labelled.select("UniqueYears").to_numpy(), labelled["segment"])
    assert tree.score(labelled.select("UniqueYears").to_numpy(), labelled["segment"]) < 0.90


def touching_blobs(seed: int) -> pl.DataFrame:
    """Three groups of 150 customers in (Amount, AvgOrderValue) close enough to share border points."""
    rng = np.random.default_rng(seed)
    points = np.vstack([rng.normal(centre, 0.5, size=(150, 2)) for centre in ([6, 6], [8.2, 6], [7.1, 7.9])])
    n = len(points)
    return blobs().head(1).select(pl.all().repeat_by(n).explode()).with_columns(
        CustomerID=pl.int_range(n), Amount=np.expm1(points[:, 0]), AvgOrderValue=np.expm1(points[:, 1]))


def test_the_model_reproduces_every_published_label_border_points_included():
    # scikit-learn gives a border point to whichever cluster reaches it first, the model to the nearest core
    # sample's: the published labels must be the model's.
    options = ClusteringOptions(features=("Amount", "AvgOrderValue"), eps=0.3, min_samples=12, resamples=1, min_segments=1)
    labels_would_differ = []
    for seed in range(8):
        features = touching_blobs(seed)
        result = fit_segments(features, options)
        assert result.model.assign(features).select("cluster", "segment").equals(
            result.assignments.select("cluster", "segment")), seed
        dbscan = DBSCAN(eps=0.3, min_samples=12).fit(result.model.scaled(features))
        folded = fold_small_clusters(dbscan.labels_, options.min_segment_share * features.height, options.max_segments)
        if adjusted_rand_score(folded, result.assignments["cluster"]) < 1:
            labels_would_differ.append(seed)
    assert labels_would_differ  # so publishing scikit-learn's labels_ would fail the test


@pytest.mark.parametrize("features, message", [
    (blobs().head(5), r"5 customer\(s\) left after cleaning, but a DBSCAN cluster needs at least min_samples = 6"),
    (blobs().head(1).select(pl.all().repeat_by(40).explode()).with_columns(CustomerID=pl.int_range(40)),
     r"identical clustering features"),
])
def test_too_few_or_identical_customers_are_an_input_error(features, message):
    with pytest.raises(InputError, match=message):
        fit_segments(features, THREE_FEATURES)


def test_a_fit_of_one_label_has_no_stability():
    assert mean_agreement(np.full(10, OUTLIER), [np.full(10, OUTLIER)]) is None
    assert mean_agreement(np.array([0, 0, 1, 1]), [np.array([1, 1, 0, 0])]) == 1.0
