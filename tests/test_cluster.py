"""Clustering: parameter choice, folding of small clusters, naming, risk, and the contract."""

import numpy as np
import polars as pl
import pytest

from schemas import SegmentAssignments
from tasks.cluster import (
    ClusteringOptions, describe_profile, fit_segments, fold_small_clusters, knee_of, risk_score,
)


def test_knee_is_the_last_point_before_the_curve_shoots_up():
    # Normalised: x = 0, .25, .5, .75, 1 and y = 0, .034, .069, .103, 1; x - y peaks at .647 on the 4th point.
    assert knee_of(np.array([0.1, 0.2, 0.3, 0.4, 3.0])) == 0.4


def test_knee_of_a_flat_curve_is_its_value():
    assert knee_of(np.full(10, 0.5)) == 0.5


def test_small_clusters_are_folded_into_outliers_and_the_rest_renumbered_by_size():
    labels = np.array([0, 0, 1, 1, 1, 2, -1, 1, 0, 2])
    # sizes: 0 -> 3, 1 -> 4, 2 -> 2; with min_size 3 cluster 2 folds, 1 becomes 0 (largest), 0 becomes 1.
    assert fold_small_clusters(labels, 3).tolist() == [1, 1, 0, 0, 0, -1, -1, 0, 1, -1]


def test_fold_keeps_input_unchanged():
    labels = np.array([0, 1, 1])
    fold_small_clusters(labels, 2)
    assert labels.tolist() == [0, 1, 1]


def test_risk_is_high_for_a_lapsed_rare_small_buyer_and_low_for_the_opposite():
    frame = pl.DataFrame({"Recency": [300, 5, 100], "FrequencyPurchase": [1, 40, 5], "Amount": [10.0, 9000.0, 500.0]})
    scores = frame.select(risk_score(frame))["risk_score"].to_list()
    # ranks /3: lapsed = 0.5*1 + 0.3*(1-1/3) + 0.2*(1-1/3); loyal = 0.5/3 + 0 + 0
    assert scores[0] == pytest.approx(0.5 + 0.3 * 2 / 3 + 0.2 * 2 / 3)
    assert scores[1] == pytest.approx(0.5 / 3)
    assert scores[1] < scores[2] < scores[0]


@pytest.mark.parametrize(
    ("medians", "expected"),
    [
        ({"Amount": 5000, "Recency": 10, "FrequencyPurchase": 20, "AvgOrderValue": 250}, "High-value loyal"),
        ({"Amount": 100, "Recency": 200, "FrequencyPurchase": 1, "AvgOrderValue": 100}, "Low-value one-timers"),
        ({"Amount": 600, "Recency": 250, "FrequencyPurchase": 3, "AvgOrderValue": 200}, "Mid-value lapsed"),
        ({"Amount": 9000, "Recency": 40, "FrequencyPurchase": 4, "AvgOrderValue": 2250}, "High-value bulk buyers"),
        ({"Amount": 700, "Recency": 40, "FrequencyPurchase": 3, "AvgOrderValue": 230}, "Mid-value regulars"),
    ],
)
def test_names_follow_the_profile_relative_to_the_base(medians, expected):
    base = {"Amount": 650, "Recency": 50, "FrequencyPurchase": 2, "AvgOrderValue": 280}
    reading = describe_profile(medians, base)
    assert reading.name == expected
    assert reading.action


def blobs(seed: int = 0) -> pl.DataFrame:
    """Three well separated groups of customers in (Recency, Frequency, Amount) plus two far-off points."""
    rng = np.random.default_rng(seed)
    centres = [(5, 30, 8000.0), (200, 1, 80.0), (40, 5, 900.0)]
    rows = []
    for recency, frequency, amount in centres:
        for _ in range(120):
            rows.append((
                max(0, int(recency * rng.lognormal(0, 0.1))), frequency,
                amount * rng.lognormal(0, 0.1),
            ))
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


def test_separated_groups_become_segments_and_far_points_outliers():
    features = blobs()
    result = fit_segments(features, ClusteringOptions(features=("Recency", "FrequencyPurchase", "Amount")))
    SegmentAssignments.validate(result.assignments)
    labels = result.assignments["segment"].to_numpy()
    assert result.metrics["segments"] == 3
    assert set(labels[-2:]) == {-1}
    for start in (0, 120, 240):
        group = labels[start:start + 120]
        assert np.mean(group == np.bincount(group[group >= 0]).argmax()) > 0.95
    names = result.profiles.filter(pl.col("segment") >= 0)["segment_name"].to_list()
    assert len(set(names)) == 3
    assert "Outliers" in result.profiles["segment_name"].to_list()
    assert result.profiles["customers"].sum() == features.height
    assert result.profiles["revenue_share"].sum() == pytest.approx(1.0)


def test_user_given_eps_and_min_samples_override_the_automatic_choice():
    result = fit_segments(blobs(), ClusteringOptions(eps=0.25, min_samples=4))
    assert (result.eps, result.min_samples) == (0.25, 4)


def test_automatic_min_samples_is_twice_the_dimensionality():
    result = fit_segments(blobs(), ClusteringOptions(features=("Recency", "Amount")))
    assert result.min_samples == 4
    assert np.all(np.diff(result.k_distances) >= 0)
    assert result.eps in result.k_distances


def test_features_are_not_modified():
    features = blobs()
    before = features.clone()
    fit_segments(features)
    assert features.equals(before)
