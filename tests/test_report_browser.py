"""The report of a real run, as a reader gets it: opened in headless Chromium, checked figure by figure
against profiles.csv, and proven inert against markup smuggled in through the input data."""

import base64
import html
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from playwright.sync_api import Browser, Page

from flows.parameters import SegmentationParameters
from flows.segmentation import clustering_options
from tasks import artifacts, clean, cluster, features, ingest
from tasks.generate import generate_transactions
from tests.chromium import chromium
from tests.images import colour_count

pytestmark = pytest.mark.slow

CHART_SIZE = (1200, 750)  # width x height in pixels
MISSING = "—"
# Report column of the segment table -> column of profiles.csv.
SEGMENT_FIGURES = {
    "Customers": "customers",
    "Customer share": "customer_share",
    "Revenue share": "revenue_share",
    "Median recency (days)": "median_Recency",
    "Median frequency (invoices)": "median_FrequencyPurchase",
    "Median net revenue (currency units)": "median_Amount",
    "Median avg order value (currency units)": "median_AvgOrderValue",
    "Low risk": "risk_low",
    "Medium risk": "risk_medium",
    "High risk": "risk_high",
}
# Each would run script if it reached the page as markup; the report must show it as text.
CRAFTED_COUNTRY = "<img src=x onerror=window.injected=1><script>window.injected=2</script>"
CRAFTED_DESCRIPTION = "<script>window.injected=3</script>"


# --- a run without Prefect --------------------------------------------------------------


@dataclass(frozen=True)
class RenderedRun:
    profiles: pl.DataFrame  # as published in profiles.csv
    charts: dict[str, bytes]  # file name -> PNG
    html: str


def render_run(loaded: ingest.IngestedTransactions, params: SegmentationParameters, run_id: str) -> RenderedRun:
    """What the flow's clean, features, cluster and report stages make of an input, by the functions they wrap."""
    options = clean.CleaningOptions(
        non_product_codes=tuple(params.non_product_codes), countries=tuple(params.countries),
    )
    cleaned = clean.clean_transactions(loaded.transactions, options)
    customer_features = features.build_features(cleaned.lines, cleaned.returns)
    segmentation = cluster.fit_segments(customer_features, clustering_options(params))
    files, _ = artifacts.segmentation_artifacts(
        run_id, params.model_dump(mode="json"), params.as_command_line(run_id), loaded.fingerprint, cleaned,
        customer_features, segmentation, extra_metrics={},
    )
    charts = {name.removeprefix("charts/"): png for name, png in files.items() if name.startswith("charts/")}
    return RenderedRun(pl.read_csv(files["profiles.csv"]), charts, files["report.html"].decode())


@pytest.fixture(scope="module")
def real_run(real_data: Path) -> RenderedRun:
    return render_run(ingest.load_transactions(real_data), SegmentationParameters(input=str(real_data)), "real-data")


@pytest.fixture(scope="module")
def crafted_run(tmp_path_factory: pytest.TempPathFactory) -> RenderedRun:
    """A run on demo lines where some customers' Country and some lines' Description are crafted markup."""
    lines = generate_transactions(20_000, seed=3).transactions.with_columns(
        pl.when(pl.col("CustomerID") % 7 == 0).then(pl.lit(CRAFTED_COUNTRY)).otherwise("Country").alias("Country"),
        pl.when(pl.col("StockCode").str.ends_with("1")).then(pl.lit(CRAFTED_DESCRIPTION)).otherwise("Description")
        .alias("Description"),
    )
    path = tmp_path_factory.mktemp("crafted") / "transactions.parquet"
    lines.write_parquet(path)
    # Selecting every country, the crafted one included, puts it into the report's parameters and command.
    countries = sorted(lines.get_column("Country").drop_nulls().unique())
    params = SegmentationParameters(input=str(path), countries=countries)
    return render_run(ingest.load_transactions(path), params, "crafted")


# --- reading the HTML -------------------------------------------------------------------


class ParsedReport(HTMLParser):
    """The elements of a page with their attribute names, and the text of every table cell."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.elements: list[tuple[str, list[str]]] = []
        self.tables: list[list[list[str]]] = []  # table -> row -> cell text
        self._cell: list[str] | None = None
        self.feed(page)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, [name for name, _ in attrs]))
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in {"td", "th"}:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in {"td", "th"} and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)

    def table_starting_with(self, *header: str) -> list[dict[str, str]]:
        """The rows, by column name, of the one table whose header starts with `header`."""
        [table] = [table for table in self.tables if tuple(table[0][:len(header)]) == header]
        return [dict(zip(table[0], row)) for row in table[1:]]


def assert_shows(printed: str, value: float | None, where: str) -> None:
    """`printed` is `value` as the report prints it: rounded, with thousands separators, maybe as a percentage."""
    if value is None or np.isnan(value):
        assert printed == MISSING, f"{where}: {printed} for a missing value"
        return
    assert printed != MISSING, f"{where}: {MISSING} for {value}"
    number, scale = (printed[:-1], 100) if printed.endswith("%") else (printed, 1)
    number = number.replace(",", "")
    decimals = len(number.partition(".")[2])
    assert abs(float(number) / scale - value) <= 0.5 * 10 ** -decimals / scale + 1e-12, f"{where}: {printed} vs {value}"


def png_size(png: bytes) -> tuple[int, int]:
    """Width and height from a PNG's header."""
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


# --- the page in Chromium ---------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


@dataclass
class OpenedReport:
    """A report loaded in a browser tab, with everything the tab reported while loading it."""

    page: Page
    console: list[str] = field(default_factory=list)  # "type: text"
    page_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)

    @property
    def console_errors(self) -> list[str]:
        return [message for message in self.console if message.startswith("error:")]


OpenReport = Callable[[str], OpenedReport]  # report HTML -> the report loaded in a new tab


@pytest.fixture
def open_report(browser: Browser, tmp_path: Path) -> Iterator[OpenReport]:
    """Opens an HTML report from a file, as a reader would; the tab closes after the test."""
    pages: list[Page] = []

    def opened(page_html: str) -> OpenedReport:
        path = tmp_path / "report.html"
        path.write_text(page_html, encoding="utf-8")
        report = OpenedReport(browser.new_page(viewport={"width": 1280, "height": 900}))
        pages.append(report.page)
        report.page.on("console", lambda message: report.console.append(f"{message.type}: {message.text}"))
        report.page.on("pageerror", lambda error: report.page_errors.append(str(error)))
        report.page.on("request", lambda request: report.requests.append(request.url))
        report.page.on("requestfailed", lambda request: report.failed_requests.append(
            f"{request.url[:100]}: {request.failure}"))
        report.page.on("dialog", lambda dialog: (report.dialogs.append(dialog.message), dialog.dismiss()))
        report.page.goto(path.as_uri(), wait_until="load")
        return report

    yield opened
    for page in pages:
        page.close()


def decoded_images(page: Page) -> list[dict]:
    """Each <img> of the page after decoding: its source, natural size and whether it decoded."""
    return page.evaluate("""() => Promise.all([...document.images].map(image => image.decode().then(
        () => ({src: image.src, width: image.naturalWidth, height: image.naturalHeight, decoded: true}),
        () => ({src: image.src, width: image.naturalWidth, height: image.naturalHeight, decoded: false}),
    )))""")


# --- tests ------------------------------------------------------------------------------


def test_the_real_report_lists_every_segment_of_profiles_csv_with_the_same_figures(real_run: RenderedRun) -> None:
    shown = ParsedReport(real_run.html).table_starting_with("Segment", "Customers")
    shown_by_name = {row["Segment"]: row for row in shown}

    assert len(shown_by_name) == len(shown) == real_run.profiles.height
    for profile in real_run.profiles.iter_rows(named=True):
        row = shown_by_name[profile["segment_name"]]
        for column, profile_column in SEGMENT_FIGURES.items():
            assert_shows(row[column], profile[profile_column], f"{profile['segment_name']} / {column}")


def test_the_real_charts_are_non_blank_images_of_the_fixed_size(real_run: RenderedRun) -> None:
    assert len(real_run.charts) == 6
    for name, png in real_run.charts.items():
        assert png_size(png) == CHART_SIZE, name
        assert colour_count(png) > 10, name


def test_the_real_report_loads_in_chromium_cleanly_with_every_chart_decoded(
    real_run: RenderedRun, open_report: OpenReport, tmp_path: Path
) -> None:
    opened = open_report(real_run.html)
    images = decoded_images(opened.page)
    opened.page.screenshot(path=tmp_path / "real-data-report.png", full_page=True)

    assert opened.console_errors == [] and opened.page_errors == []
    assert opened.failed_requests == []
    assert all(url.startswith(("file:", "data:")) for url in opened.requests), opened.requests
    charts_by_uri = {"data:image/png;base64," + base64.b64encode(png).decode(): png for png in real_run.charts.values()}
    assert sorted(image["src"] for image in images) == sorted(charts_by_uri)
    for image in images:
        assert image["decoded"] and image["width"] > 0
        assert (image["width"], image["height"]) == png_size(charts_by_uri[image["src"]]) == CHART_SIZE
    assert png_size((tmp_path / "real-data-report.png").read_bytes())[1] > 900  # the whole page, not the viewport


def test_markup_in_the_input_data_reaches_the_report_as_text_only(crafted_run: RenderedRun) -> None:
    parsed = ParsedReport(crafted_run.html)

    assert crafted_run.html.count(html.escape(CRAFTED_COUNTRY)) >= 2  # it did reach the page...
    assert not [tag for tag, _ in parsed.elements if tag == "script"]  # ...but made no element
    assert not [(tag, names) for tag, names in parsed.elements if any(name.startswith("on") for name in names)]


def test_markup_in_the_input_data_stays_inert_in_chromium(
    crafted_run: RenderedRun, open_report: OpenReport, tmp_path: Path
) -> None:
    opened = open_report(crafted_run.html)
    opened.page.screenshot(path=tmp_path / "crafted-input-report.png", full_page=True)

    assert CRAFTED_COUNTRY in opened.page.inner_text("body")
    assert opened.page.evaluate("() => window.injected") is None
    assert opened.dialogs == [] and opened.page_errors == [] and opened.console_errors == []
    assert opened.failed_requests == []
