"""The run's data files: what each export holds and how it is written."""

import io

import polars as pl
import pytest

from tasks.artifacts import data_files, segment_table
from tasks.clean import clean_transactions
from tasks.features import build_features
from tests.conftest import invoice_lines

# Each would run as a formula in a spreadsheet: the OWASP list of characters that start one.
FORMULA_COUNTRIES = ('=HYPERLINK("http://evil.example","Click")', "+1+cmd|' /C calc'!A0", "-2+3", "@SUM(A1)",
                     "\t=1+1", "\r=1+1")


@pytest.fixture(scope="module")
def files_of_formula_countries() -> dict[str, bytes]:
    """The data files of one customer per formula country plus one from France, all in one segment."""
    countries = (*FORMULA_COUNTRIES, "France")
    cleaned = clean_transactions(invoice_lines(*(
        (f"5363{index:02}", "85123A", 6, "2010-12-01 08:26", 2.55, 17850 + index, country)
        for index, country in enumerate(countries)
    )))
    features = build_features(cleaned.lines, cleaned.returns)
    assignments = features.select(
        "CustomerID", pl.lit(0).alias("cluster"), pl.lit(0).alias("segment"),
        pl.lit("Loyal").alias("segment_name"), pl.lit(0.5).alias("risk_score"), pl.lit("Medium").alias("risk"),
    )
    segments = segment_table(features, assignments)
    return data_files(segments, pl.DataFrame({"segment": [0]}), cleaned)


def test_crm_lists_show_text_that_would_start_a_formula_as_text(files_of_formula_countries: dict[str, bytes]):
    crm_list = pl.read_csv(io.BytesIO(files_of_formula_countries["exports/segment_loyal.csv"]))

    assert crm_list["Country"].to_list() == [f"'{country}" for country in FORMULA_COUNTRIES] + ["France"]
    assert crm_list["segment_name"].to_list() == ["Loyal"] * 7


def test_the_segment_table_keeps_every_value_as_it_is(files_of_formula_countries: dict[str, bytes]):
    segments = pl.read_csv(io.BytesIO(files_of_formula_countries["segments.csv"]))

    assert segments["Country"].to_list() == [*FORMULA_COUNTRIES, "France"]
