"""Clustering above the fit sample: DBSCAN on a seeded sample, the fitted model labelling every customer."""

from dataclasses import replace

from polars.testing import assert_frame_equal
from sklearn.metrics import adjusted_rand_score

from tasks.cluster import fit_segments
from tests.test_cluster import THREE_FEATURES, blobs

SAMPLED = replace(THREE_FEATURES, fit_sample=200)
EXACT = replace(THREE_FEATURES, fit_sample=None)


def test_above_the_fit_sample_dbscan_sees_a_sample_and_the_model_labels_everyone():
    features = blobs()
    result = fit_segments(features, SAMPLED)
    assert result.metrics["fitted_customers"] == 200
    assert len(result.k_distances) == 200
    assert result.assignments["CustomerID"].to_list() == features["CustomerID"].to_list()
    # Everyone, the sampled customers included, is labelled by the published model's own rule.
    assert result.model.assign(features)["segment"].to_list() == result.assignments["segment"].to_list()


def test_the_sample_finds_the_clusters_of_the_exact_fit():
    features = blobs()
    exact, sampled = fit_segments(features, EXACT), fit_segments(features, SAMPLED)
    assert exact.metrics["fitted_customers"] == features.height
    assert adjusted_rand_score(exact.assignments["cluster"], sampled.assignments["cluster"]) >= 0.95


def test_up_to_the_fit_sample_every_customer_is_fitted_exactly():
    features = blobs()
    at_the_limit = fit_segments(features, replace(THREE_FEATURES, fit_sample=features.height))
    exact = fit_segments(features, EXACT)
    assert_frame_equal(at_the_limit.assignments, exact.assignments)
    assert at_the_limit.metrics == exact.metrics
