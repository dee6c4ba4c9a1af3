"""The customers behind a fitted SegmentModel's core samples, which relabelling must leave as they were fitted."""

import polars as pl

from tasks.model import SegmentModel

LABELS = ("cluster", "segment", "segment_name")


def core_customers(model: SegmentModel, features: pl.DataFrame) -> pl.DataFrame:
    """The CustomerID of each customer whose scaled features, as a whole row, are one of the model's core samples."""
    columns = list(model.features)
    scaled = pl.DataFrame(model.scaled(features), schema=columns, orient="row").with_columns(features["CustomerID"])
    core = pl.DataFrame(model.core_points, schema=columns, orient="row").unique()
    return scaled.join(core, on=columns, how="semi").select("CustomerID")


def assert_core_samples_keep_their_labels(
    model: SegmentModel, features: pl.DataFrame, fitted: pl.DataFrame, assigned: pl.DataFrame,
) -> None:
    """`assigned` gives the customer of every core sample the cluster, segment and name that `fitted` gives it."""
    core = core_customers(model, features)
    assert core.height == len(model.core_points) > 0
    both = fitted.join(assigned, on="CustomerID", suffix="_assigned").join(core, on="CustomerID", how="semi")
    assert both.height == core.height
    for label in LABELS:
        assert both[label].equals(both[f"{label}_assigned"], check_names=False), label
