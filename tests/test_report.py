"""Tests for the report stage: six valid, non-blank PNG charts and one inert, self-contained HTML page."""

import base64
import html
import io
import re
from dataclasses import fields

import matplotlib.image
import numpy as np
import polars as pl
import pytest

from schemas import CustomerFeatures, SegmentAssignments
from tasks.report import ReportInputs, format_number, format_percent, render_charts, render_report_html
from tests.images import colour_count

CHART_NAMES = {
    "k_distance.png", "projection.png", "distributions.png",
    "sizes_revenue.png", "snake_plot.png", "cleaning_funnel.png",
}
CHART_PIXELS = (750, 1200)  # rows x columns
FEATURES = (
    "Recency", "FrequencyPurchase", "Amount", "NumUniqueItems", "UniqueYears", "Tenure",
    "AvgOrderValue", "AvgBasketSize", "ReturnRate", "MeanInterpurchaseDays",
)
SEGMENT_NAMES = {0: "Champions", 1: "Loyal regulars", 2: "At risk", 3: "Hibernating", -1: "Outliers"}
SCRIPT = "<script>alert(1)</script>"
MATHTEXT = r"$\frac{ big $ spenders"  # matplotlib would try to typeset this as math
COMMAND = "segments run --input '../shared/data/online_retail.parquet' --eps 0.5 --min-samples 8 --run-id r&d-42"


def _segments(rng: np.random.Generator, customers: int, segment_ids: list[int], country: str) -> pl.DataFrame:
    """Random customers whose features loosely depend on their segment."""
    segment = rng.choice(segment_ids, size=customers)
    level = np.where(segment == -1, 5, segment + 1)
    frequency = rng.integers(1, 10, customers) * level
    amount = rng.lognormal(5 + level / 2, 1.0, customers)
    amount[:3] = 0.0  # customers whose purchases were all returned
    recency = rng.integers(0, 90, customers) * (5 - np.minimum(level, 4))
    risk_score = rng.uniform(0, 1, customers)
    return pl.DataFrame({
        "CustomerID": np.arange(12_000, 12_000 + customers),
        "Country": [country] * customers,
        "Recency": recency,
        "FrequencyPurchase": frequency,
        "Amount": amount,
        "NumUniqueItems": rng.integers(1, 200, customers),
        "UniqueYears": rng.integers(1, 3, customers),
        "Tenure": recency + rng.integers(0, 400, customers),
        "AvgOrderValue": amount / frequency,
        "AvgBasketSize": rng.uniform(1, 300, customers),
        "ReturnRate": rng.uniform(0, 0.3, customers),
        "MeanInterpurchaseDays": rng.uniform(0, 120, customers),
        "cluster": segment,
        "segment": segment,
        "segment_name": [SEGMENT_NAMES[s] for s in segment],
        "risk_score": risk_score,
        "risk": np.select([risk_score < 1 / 3, risk_score < 2 / 3], ["Low", "Medium"], "High"),
    }).with_columns(pl.col("^(Recency|FrequencyPurchase|NumUniqueItems|UniqueYears|Tenure|cluster|segment)$")
                    .cast(pl.Int64))


def _profiles(segments: pl.DataFrame) -> pl.DataFrame:
    """Per-segment profile in the shape the profiling stage hands over."""
    return (
        segments.group_by("segment", "segment_name")
        .agg(
            pl.len().cast(pl.Int64).alias("customers"),
            pl.col("Amount").sum().alias("revenue"),
            *(pl.col(f).median().cast(pl.Float64).alias(f"median_{f}") for f in FEATURES),
            *(pl.col(f).mean().cast(pl.Float64).alias(f"mean_{f}") for f in FEATURES),
            *((pl.col("risk") == level).mean().alias(f"risk_{level.lower()}") for level in ("Low", "Medium", "High")),
        )
        .with_columns(
            (pl.col("segment_name") + " customers, described").alias("description"),
            (pl.lit("Email ") + pl.col("segment_name")).alias("action"),
            (pl.col("customers") / pl.col("customers").sum()).alias("customer_share"),
            (pl.col("revenue") / pl.col("revenue").sum()).alias("revenue_share"),
        )
        .sort("segment")
    )


def make_inputs(hostile: bool = False, with_outliers: bool = True) -> ReportInputs:
    """300 synthetic customers in four segments (plus outliers); hostile puts markup in every text."""
    rng = np.random.default_rng(7)
    text = SCRIPT if hostile else None
    segment_ids = [0, 1, 2, 3, -1] if with_outliers else [0, 1, 2, 3]
    segments = _segments(rng, 300, segment_ids, country=text or "United Kingdom")
    if hostile:
        segments = segments.with_columns(
            pl.col("segment").replace_strict({0: SCRIPT, 1: MATHTEXT}, default=pl.col("segment_name"))
            .alias("segment_name")
        )
    profiles = _profiles(segments)
    if hostile:
        profiles = profiles.with_columns(
            pl.when(pl.col("segment") == 0).then(pl.lit(SCRIPT)).otherwise(pl.col(c)).alias(c)
            for c in ("description", "action")
        )
    rule = {"rule": text or "missing_customer", "description": text or "No CustomerID", "removed_rows": 135_080,
            "customers_after": 4_372}
    return ReportInputs(
        run_id=text or "2024-05-01T10-00-00Z",
        segments=segments,
        profiles=profiles,
        quality={
            "raw_rows": 541_909, "clean_rows": 397_924, "quarantined_rows": 143_985,
            "rules": [rule, {"rule": "cancellation", "description": "Invoice starts with C", "removed_rows": 8_905,
                             "customers_after": 4_339}],
        },
        k_distances=sorted(rng.gamma(2.0, 0.3, 300).tolist()),
        eps=0.5,
        min_samples=8,
        projection=pl.DataFrame({
            "CustomerID": segments.get_column("CustomerID"),
            "pc1": rng.normal(segments.get_column("segment").to_numpy(), 0.4),
            "pc2": rng.normal(0, 1, 300),
        }),
        metrics={"segments": 4, "outlier_share": 0.04, "silhouette": 0.41, "davies_bouldin": None},
        parameters={"eps": 0.5, "min_samples": 8, "features": ["Recency", "Amount"], "campaign": text or "spring"},
        input_description=text or "../shared/data/online_retail.parquet (541,909 rows, sha256 1a2b…)",
        reproduce_command=COMMAND + (f" --note '{SCRIPT}'" if hostile else ""),
    )


@pytest.fixture(scope="module")
def inputs() -> ReportInputs:
    return make_inputs()


@pytest.fixture(scope="module")
def charts(inputs: ReportInputs) -> dict[str, bytes]:
    return render_charts(inputs)


@pytest.fixture(scope="module")
def report(inputs: ReportInputs, charts: dict[str, bytes]) -> str:
    return render_report_html(inputs, charts)


def test_synthetic_customers_honour_the_pipeline_contracts(inputs: ReportInputs):
    features = inputs.segments.select(*CustomerFeatures.to_schema().columns)
    CustomerFeatures.validate(features, lazy=True)
    SegmentAssignments.validate(inputs.segments, lazy=True)


def test_render_charts_returns_the_six_charts(charts: dict[str, bytes]):
    assert set(charts) == CHART_NAMES


@pytest.mark.parametrize("name", sorted(CHART_NAMES))
def test_each_chart_is_a_non_blank_png_of_fixed_size(charts: dict[str, bytes], name: str):
    png = charts[name]
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    pixels = matplotlib.image.imread(io.BytesIO(png), format="png")
    assert pixels.shape[:2] == CHART_PIXELS
    assert colour_count(png) > 10


def test_charts_render_without_an_outliers_group():
    charts = render_charts(make_inputs(with_outliers=False))
    assert set(charts) == CHART_NAMES


def test_report_lists_every_segment_with_its_customer_count(inputs: ReportInputs, report: str):
    for name, customers in inputs.profiles.select("segment_name", "customers").iter_rows():
        assert html.escape(name) in report
        assert f">{format_number(customers)}<" in report


def test_report_embeds_each_chart_as_a_data_uri(charts: dict[str, bytes], report: str):
    embedded = [base64.b64decode(data) for data in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', report)]
    assert sorted(embedded) == sorted(charts.values())


def test_report_is_self_contained(report: str):
    lowered = report.lower()
    assert "<script" not in lowered
    assert "<link" not in lowered
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", lowered)
    assert "@import" not in lowered and "url(" not in lowered


def test_report_shows_the_reproduce_command_verbatim(report: str):
    assert f"<pre>{html.escape(COMMAND)}</pre>" in report


def test_hostile_text_stays_inert():
    hostile = make_inputs(hostile=True)
    report = render_report_html(hostile, render_charts(hostile))
    assert "<script" not in report.lower()
    assert html.escape(MATHTEXT) in report
    # segment name, description, action, rule, run id, input, parameter, command: each shown as text
    assert report.count(html.escape(SCRIPT)) >= 8


def test_rendering_does_not_mutate_inputs(inputs: ReportInputs, report: str):
    untouched = make_inputs()  # same seed, so equal to what `inputs` was before the fixtures rendered it
    for field in fields(ReportInputs):
        before, after = getattr(untouched, field.name), getattr(inputs, field.name)
        assert after.equals(before) if isinstance(before, pl.DataFrame) else after == before, field.name


@pytest.mark.parametrize(("value", "expected"), [
    (541_909, "541,909"), (np.int64(4_372), "4,372"), (1234.5678, "1,234.57"),
    (None, "—"), (float("nan"), "—"), (True, "True"),
])
def test_format_number(value: object, expected: str):
    assert format_number(value) == expected


@pytest.mark.parametrize(("share", "expected"), [(0.0412, "4.1%"), (1.0, "100.0%"), (None, "—")])
def test_format_percent(share: float | None, expected: str):
    assert format_percent(share) == expected
