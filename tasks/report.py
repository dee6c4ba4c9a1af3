"""Report stage: six matplotlib charts and one self-contained HTML report, returned in memory.

Nothing here touches the file system or pyplot: every chart is its own `Figure` rendered by an
Agg canvas, so rendering never opens a window, never needs a GUI backend and leaves pyplot users alone.
"""

import base64
import html
import io
import json
import math
import numbers
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_hex, to_rgba
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import PercentFormatter

from schemas.segment_assignments import OUTLIER, RISK_LEVELS

MISSING = "—"

# Size and dpi are fixed here, not taken from rcParams, so every PNG is exactly this many pixels.
_CHART_PIXELS = (1200, 750)
_DPI = 150
_SEGMENT_PALETTE = colormaps["tab10"].colors
_OUTLIER_COLOUR = "#9e9e9e"
_INK = "#1f3b57"
_ALERT = "#c0392b"


@dataclass(frozen=True)
class ReportInputs:
    """Everything the report shows about one run."""

    run_id: str
    segments: pl.DataFrame  # one row per customer: the features plus cluster, segment, segment_name, risk
    profiles: pl.DataFrame  # one row per segment (outliers included): sizes, shares, median_<F>, mean_<F>, risk mix
    quality: dict  # raw_rows, clean_rows, quarantined_rows and the cleaning rules in the order applied
    k_distances: list[float]  # ascending distance of each customer to its k-th nearest neighbour
    eps: float
    min_samples: int
    projection: pl.DataFrame  # CustomerID, pc1, pc2
    metrics: dict  # values may be None
    parameters: dict  # JSON-able
    input_description: str
    reproduce_command: str


@dataclass(frozen=True)
class _Feature:
    """A customer feature the report puts in front of marketers."""

    column: str
    name: str
    unit: str
    log_scale: bool
    decimals: int

    @property
    def label(self) -> str:
        """Axis label with the unit."""
        return f"{self.name} ({self.unit})"


_MAIN_FEATURES = (
    _Feature("Recency", "Recency", "days", log_scale=False, decimals=0),
    _Feature("FrequencyPurchase", "Frequency", "invoices", log_scale=True, decimals=0),
    _Feature("Amount", "Net revenue", "currency units", log_scale=True, decimals=2),
    _Feature("AvgOrderValue", "Avg order value", "currency units", log_scale=True, decimals=2),
)


@dataclass(frozen=True)
class _SegmentStyle:
    """How one segment looks in every chart and table."""

    segment: int
    name: str
    colour: str

    @property
    def is_outlier(self) -> bool:
        """Whether this is the outliers group rather than a real segment."""
        return self.segment == OUTLIER

    @property
    def chart_label(self) -> str:
        """The name as matplotlib should print it."""
        return _chart_text(self.name)


# ---------------------------------------------------------------- formatting


def format_number(value: object, decimals: int = 2) -> str:
    """Readable number: thousands separators, fixed decimals for non-integers, an em dash when missing."""
    if value is None or (isinstance(value, numbers.Real) and math.isnan(value)):
        return MISSING
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return str(value)
    if isinstance(value, numbers.Integral):
        return f"{int(value):,}"
    return f"{float(value):,.{decimals}f}"


def _compact_number(value: float) -> str:
    """A round axis value in few characters: 950, 1k, 25k, 3M."""
    for divisor, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= divisor:
            return f"{value / divisor:g}{suffix}"
    return f"{value:g}"


def format_percent(share: float | None, decimals: int = 1) -> str:
    """A 0..1 share as a percentage, an em dash when missing."""
    if share is None or math.isnan(share):
        return MISSING
    return f"{share:.{decimals}%}"


# ---------------------------------------------------------------- segments


def _in_display_order(profiles: pl.DataFrame) -> pl.DataFrame:
    """Profiles sorted by segment id with the outliers group last."""
    return profiles.sort(pl.col("segment") == OUTLIER, "segment")


def _segment_styles(profiles: pl.DataFrame) -> list[_SegmentStyle]:
    """Each segment in display order with its fixed colour (by position, so colours are stable per run)."""
    rows = _in_display_order(profiles).select("segment", "segment_name").iter_rows()
    return [
        _SegmentStyle(
            segment,
            name,
            _OUTLIER_COLOUR if segment == OUTLIER else to_hex(_SEGMENT_PALETTE[position % len(_SEGMENT_PALETTE)]),
        )
        for position, (segment, name) in enumerate(rows)
    ]


def _values_of(segments: pl.DataFrame, segment: int, column: str) -> np.ndarray:
    """One feature's values for the customers of one segment."""
    return segments.filter(pl.col("segment") == segment).get_column(column).to_numpy()


# ---------------------------------------------------------------- charts


def _chart_text(text: str) -> str:
    """Text shown literally by matplotlib, which would otherwise read "$...$" as math."""
    return text.replace("$", r"\$")


def _new_figure() -> Figure:
    """A blank white figure of the report's fixed size."""
    width, height = _CHART_PIXELS
    return Figure(figsize=(width / _DPI, height / _DPI), dpi=_DPI, layout="constrained", facecolor="white")


def _style_axes(ax: Axes) -> None:
    """The report's quiet house style: light grid behind the data, no top/right frame."""
    ax.set_axisbelow(True)
    ax.grid(color="#e3e3e3", linewidth=0.8)
    ax.spines[["top", "right"]].set_visible(False)


def _png_bytes(figure: Figure) -> bytes:
    """Render a figure to PNG bytes with the Agg canvas."""
    buffer = io.BytesIO()
    FigureCanvasAgg(figure).print_png(buffer)
    return buffer.getvalue()


def _k_distance_chart(inputs: ReportInputs) -> Figure:
    """Sorted k-distance curve with the chosen eps as a horizontal line."""
    distances = np.asarray(inputs.k_distances, dtype=float)
    share_above = float(np.mean(distances > inputs.eps)) if distances.size else None
    figure = _new_figure()
    ax = figure.subplots()
    _style_axes(ax)
    ax.plot(np.arange(1, distances.size + 1), distances, color=_INK, linewidth=1.6, label="k-distance")
    ax.axhline(
        inputs.eps, color=_ALERT, linestyle="--", linewidth=1.4,
        label=f"eps = {format_number(inputs.eps, 3)} ({format_percent(share_above)} of customers above)",
    )
    ax.set_title(f"Sorted k-distance curve (min_samples = {inputs.min_samples})")
    ax.set_xlabel("Customers, sorted by k-distance (count)")
    ax.set_ylabel("Distance to k-th nearest neighbour\n(scaled feature units)")
    ax.legend(loc="upper left", frameon=False)
    return figure


def _projection_chart(inputs: ReportInputs) -> Figure:
    """2-D PCA scatter of customers coloured by segment, outliers grey crosses."""
    points = inputs.projection.join(inputs.segments.select("CustomerID", "segment"), on="CustomerID")
    figure = _new_figure()
    ax = figure.subplots()
    _style_axes(ax)
    for style in _segment_styles(inputs.profiles):
        pc1, pc2 = (_values_of(points, style.segment, axis) for axis in ("pc1", "pc2"))
        ax.scatter(
            pc1, pc2, s=14 if style.is_outlier else 10, color=style.colour, alpha=0.8 if style.is_outlier else 0.55,
            marker="x" if style.is_outlier else "o", linewidths=0.9 if style.is_outlier else 0,
            label=f"{style.chart_label} ({format_number(pc1.size)})",
            zorder=3 if style.is_outlier else 2,
        )
    ax.set_title("Customers on the first two principal components")
    ax.set_xlabel("PC1 (standardized feature units)")
    ax.set_ylabel("PC2 (standardized feature units)")
    figure.legend(loc="outside right upper", frameon=False, title="Segment (customers)", markerscale=1.6)
    return figure


def _distributions_chart(inputs: ReportInputs) -> Figure:
    """Box plots of the main features per segment, one panel per feature."""
    styles = _segment_styles(inputs.profiles)
    figure = _new_figure()
    axes = figure.subplots(2, 2, sharey=True)
    for ax, feature in zip(axes.flat, _MAIN_FEATURES):
        _style_axes(ax)
        boxes = ax.boxplot(
            [_values_of(inputs.segments, style.segment, feature.column) for style in styles],
            orientation="horizontal", tick_labels=[style.chart_label for style in styles], patch_artist=True,
            widths=0.6, medianprops={"color": "black"},
            flierprops={"marker": ".", "markersize": 3, "alpha": 0.4, "markeredgecolor": "none",
                        "markerfacecolor": "#555555"},
        )
        for box, style in zip(boxes["boxes"], styles):
            box.set(facecolor=to_rgba(style.colour, 0.75), edgecolor="#333333")
        if feature.log_scale:
            # symlog keeps customers with zero net revenue on the chart, unlike a plain log axis. Its ticks
            # are written as 1k rather than 10³: easier to read, and mathtext is slow to lay out.
            ax.set_xscale("symlog", linthresh=1)
            ax.xaxis.set_major_formatter(lambda value, _position: _compact_number(value))
        ax.set_xlabel(feature.label)
    axes[0, 0].invert_yaxis()  # the y axis is shared, so this puts the first segment on top in all panels
    figure.suptitle("Feature distributions per segment")
    return figure


def _sizes_revenue_chart(inputs: ReportInputs) -> Figure:
    """Customer share next to revenue share for each segment."""
    styles = _segment_styles(inputs.profiles)
    profiles = _in_display_order(inputs.profiles)
    positions = np.arange(len(styles))
    bar_height = 0.38
    figure = _new_figure()
    ax = figure.subplots()
    _style_axes(ax)
    colours = [style.colour for style in styles]
    customers = ax.barh(positions - bar_height / 2, profiles.get_column("customer_share"), bar_height, color=colours)
    revenue = ax.barh(
        positions + bar_height / 2, profiles.get_column("revenue_share"), bar_height,
        color=[to_rgba(colour, 0.3) for colour in colours], edgecolor=colours, hatch="///",
    )
    for bars in (customers, revenue):
        ax.bar_label(bars, fmt=format_percent, padding=3, fontsize=8)
    ax.set_yticks(positions, [style.chart_label for style in styles])
    ax.invert_yaxis()
    ax.xaxis.set_major_formatter(PercentFormatter(xmax=1))
    ax.set_xlabel("Share of the run's customers or net revenue (%)")
    ax.margins(x=0.12)  # room for the bar labels
    ax.set_title("Segment size and revenue share")
    figure.legend(
        handles=[Patch(facecolor="#777777", label="Share of customers"),
                 Patch(facecolor="#dddddd", edgecolor="#777777", hatch="///", label="Share of net revenue")],
        loc="outside lower center", ncols=2, frameon=False,
    )
    return figure


def _standardized_medians(profiles: pl.DataFrame) -> np.ndarray:
    """Segment medians of the main features as z-scores across segments (rows: segments in display order)."""
    medians = _in_display_order(profiles).select(f"median_{feature.column}" for feature in _MAIN_FEATURES)
    values = medians.to_numpy().astype(float)
    # Compare money and counts on a log scale so one big segment does not flatten all the others.
    log_columns = [feature.log_scale for feature in _MAIN_FEATURES]
    values[:, log_columns] = np.log1p(values[:, log_columns])
    spread = values.std(axis=0)
    centred = values - values.mean(axis=0)
    return np.divide(centred, spread, out=np.zeros_like(centred), where=spread > 0)


def _snake_plot_chart(inputs: ReportInputs) -> Figure:
    """Snake plot: one line per segment through its standardized feature medians."""
    positions = np.arange(len(_MAIN_FEATURES))
    figure = _new_figure()
    ax = figure.subplots()
    _style_axes(ax)
    ax.axhline(0, color="#888888", linewidth=0.8)
    for style, z_scores in zip(_segment_styles(inputs.profiles), _standardized_medians(inputs.profiles)):
        ax.plot(
            positions, z_scores, color=style.colour, linewidth=2, label=style.chart_label,
            marker="x" if style.is_outlier else "o", linestyle="--" if style.is_outlier else "-",
        )
    ax.set_xticks(positions, [feature.label.replace(" (", "\n(") for feature in _MAIN_FEATURES])
    ax.set_ylabel("Segment median, z-score across segments\n(log scale for frequency and money)")
    ax.set_title("Segment profiles (snake plot)")
    figure.legend(loc="outside right upper", frameon=False, title="Segment")
    return figure


def _cleaning_funnel_chart(inputs: ReportInputs) -> Figure:
    """Rows removed by each cleaning rule, in the order the rules ran."""
    quality = inputs.quality
    rules = quality["rules"]
    figure = _new_figure()
    ax = figure.subplots()
    _style_axes(ax)
    positions = np.arange(len(rules))
    bars = ax.barh(positions, [rule["removed_rows"] for rule in rules], color=_INK)
    ax.bar_label(bars, labels=[format_number(rule["removed_rows"]) for rule in rules], padding=3, fontsize=8)
    ax.set_yticks(positions, [_chart_text(rule["rule"]) for rule in rules])
    ax.invert_yaxis()
    ax.margins(x=0.12)  # room for the bar labels
    ax.xaxis.set_major_formatter(lambda value, _position: format_number(int(value)))
    ax.set_xlabel("Rows removed (count)")
    ax.set_title(
        f"Cleaning: {format_number(quality['raw_rows'])} raw rows → {format_number(quality['clean_rows'])} "
        f"clean rows ({format_number(quality['quarantined_rows'])} quarantined)"
    )
    return figure


@dataclass(frozen=True)
class _Chart:
    """One report chart: its file name, its caption and the function that draws it."""

    file_name: str
    caption: str
    draw: Callable[[ReportInputs], Figure]


_CLEANING_FUNNEL = "cleaning_funnel.png"
_CHARTS = (
    _Chart("k_distance.png", "Sorted distance of each customer to its k-th nearest neighbour; "
           "the dashed line is the eps used by DBSCAN, customers above it tend to become outliers.",
           _k_distance_chart),
    _Chart("projection.png", "Customers on the first two principal components of the scaled clustering "
           "features, coloured by segment; grey crosses are outliers.", _projection_chart),
    _Chart("distributions.png", "Distribution of the main features per segment (box: quartiles, line: median); "
           "frequency and money axes are symmetric-log so zeros stay visible.", _distributions_chart),
    _Chart("sizes_revenue.png", "Share of customers next to share of net revenue for each segment.",
           _sizes_revenue_chart),
    _Chart("snake_plot.png", "Segment medians of the main features, standardized across segments: "
           "above zero means higher than the typical segment.", _snake_plot_chart),
    _Chart(_CLEANING_FUNNEL, "Invoice lines removed by each cleaning rule, in the order the rules ran.",
           _cleaning_funnel_chart),
)
_CAPTIONS = {chart.file_name: chart.caption for chart in _CHARTS}


def render_charts(inputs: ReportInputs) -> dict[str, bytes]:
    """PNG bytes per chart file name (e.g. "k_distance.png"), each 1200 x 750 px."""
    return {chart.file_name: _png_bytes(chart.draw(inputs)) for chart in _CHARTS}


# ---------------------------------------------------------------- HTML


class _Markup(str):
    """Text that is already safe HTML; every other string is escaped before it reaches the page."""


def _escape(value: object) -> _Markup:
    """Markup as it is, anything else as inert text."""
    return value if isinstance(value, _Markup) else _Markup(html.escape(str(value)))


def _join(parts: Iterable[_Markup]) -> _Markup:
    """Concatenate safe fragments, one per line."""
    return _Markup("\n".join(parts))


def _tag(name: str, content: object, css_class: str | None = None) -> _Markup:
    """One element around escaped content."""
    class_attribute = f' class="{_escape(css_class)}"' if css_class else ""
    return _Markup(f"<{name}{class_attribute}>{_escape(content)}</{name}>")


def _table(header: Sequence[str], rows: Iterable[Sequence[object]], numeric_columns: Collection[int] = ()) -> _Markup:
    """A table with escaped cells; numeric columns are right-aligned."""

    def row_html(cells: Sequence[object], cell_tag: str) -> _Markup:
        return _tag("tr", _join(
            _tag(cell_tag, cell, "num" if index in numeric_columns else None) for index, cell in enumerate(cells)
        ))

    body = _join(row_html(row, "td") for row in rows)
    return _tag("div", _tag("table", _join([_tag("thead", row_html(header, "th")), _tag("tbody", body)])), "scroll")


def _key_value_table(pairs: Mapping[str, object]) -> _Markup:
    """A two-column table of names and already formatted values."""
    return _table(("Name", "Value"), pairs.items())


def _figure(file_name: str, png: bytes) -> _Markup:
    """A chart embedded as a base64 data URI, with its caption."""
    caption = _CAPTIONS.get(file_name, file_name)
    data_uri = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    width, height = _CHART_PIXELS
    image = _Markup(f'<img src="{_escape(data_uri)}" alt="{_escape(caption)}" width="{width}" height="{height}">')
    return _tag("figure", _join([image, _tag("figcaption", caption)]))


def _section(title: str, *parts: _Markup) -> _Markup:
    """A titled report section."""
    return _tag("section", _join([_tag("h2", title), *parts]))


def _swatch(style: _SegmentStyle) -> _Markup:
    """The segment's chart colour as a small square before its name."""
    return _Markup(f'<span class="swatch" style="background:{_escape(style.colour)}"></span>{_escape(style.name)}')


def _parameter_text(value: object) -> str:
    """A parameter value exactly as given: strings bare, everything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)


def _metric_text(name: str, value: object) -> str:
    """A metric value; names ending in "_share" are 0..1 shares."""
    return format_percent(value) if name.endswith("_share") else format_number(value, 3)


def _summary_section(inputs: ReportInputs) -> _Markup:
    """Input, row counts, metrics and parameters of the run."""
    quality = inputs.quality
    overview = {
        "Input": inputs.input_description,
        "Raw rows": format_number(quality["raw_rows"]),
        "Clean rows": format_number(quality["clean_rows"]),
        "Quarantined rows": format_number(quality["quarantined_rows"]),
        "Customers segmented": format_number(inputs.segments.height),
        "DBSCAN eps / min_samples": f"{format_number(inputs.eps, 3)} / {format_number(inputs.min_samples)}",
    }
    return _section(
        "Run summary",
        _key_value_table(overview),
        _tag("h3", "Metrics"),
        _key_value_table({name: _metric_text(name, value) for name, value in inputs.metrics.items()}),
        _tag("h3", "Parameters"),
        _key_value_table({name: _parameter_text(value) for name, value in inputs.parameters.items()}),
    )


def _quality_section(quality: dict, funnel_png: bytes | None) -> _Markup:
    """The cleaning funnel as a table and, when rendered, as a chart."""
    intro = (
        f"{format_number(quality['raw_rows'])} raw rows → {format_number(quality['clean_rows'])} clean rows; "
        f"{format_number(quality['quarantined_rows'])} rows quarantined."
    )
    rows = (
        (rule["rule"], rule["description"], format_number(rule["removed_rows"]), format_number(rule["customers_after"]))
        for rule in quality["rules"]
    )
    table = _table(("Rule", "Description", "Removed rows", "Customers after"), rows, numeric_columns={2, 3})
    chart = [_figure(_CLEANING_FUNNEL, funnel_png)] if funnel_png is not None else []
    return _section("Data quality", _tag("p", intro), table, *chart)


def _segments_section(profiles: pl.DataFrame) -> _Markup:
    """Segment sizes, key medians and risk mix, then what each segment is and what to do about it."""
    styles = _segment_styles(profiles)
    ordered = list(_in_display_order(profiles).iter_rows(named=True))
    risk_columns = [f"risk_{level.lower()}" for level in RISK_LEVELS]
    figures_header = (
        "Segment", "Customers", "Customer share", "Revenue share",
        *(f"Median {feature.name.lower()} ({feature.unit})" for feature in _MAIN_FEATURES),
        *(f"{level} risk" for level in RISK_LEVELS),
    )
    figures_rows = (
        (
            _swatch(style), format_number(profile["customers"]),
            format_percent(profile["customer_share"]), format_percent(profile["revenue_share"]),
            *(format_number(profile[f"median_{feature.column}"], feature.decimals) for feature in _MAIN_FEATURES),
            *(format_percent(profile[column]) for column in risk_columns),
        )
        for style, profile in zip(styles, ordered)
    )
    actions = (
        (_swatch(style), profile["description"], profile["action"]) for style, profile in zip(styles, ordered)
    )
    return _section(
        "Segments",
        _table(figures_header, figures_rows, numeric_columns=range(1, len(figures_header))),
        _tag("h3", "Descriptions and suggested actions"),
        _table(("Segment", "Description", "Suggested action"), actions),
    )


def _charts_section(charts: Mapping[str, bytes]) -> _Markup:
    """Every chart not already shown in another section."""
    return _section("Charts", *(_figure(name, png) for name, png in charts.items() if name != _CLEANING_FUNNEL))


def _reproduce_section(command: str, parameters: dict) -> _Markup:
    """The exact command that reproduces the run, and its parameters as JSON."""
    return _section(
        "How to reproduce",
        _tag("p", "Run this command from the project root:"),
        _tag("pre", command),
        _tag("h3", "Parameters (JSON)"),
        _tag("pre", json.dumps(parameters, indent=2, default=str, ensure_ascii=False)),
    )


_STYLE = """
body { margin: 0; background: #f6f7f9; color: #1d2733;
       font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1100px; margin: 0 auto; padding: 2rem 1.5rem 4rem; background: #fff; }
h1 { font-size: 1.7rem; margin: 0 0 .25rem; }
h2 { font-size: 1.3rem; margin: 2.5rem 0 .75rem; padding-bottom: .3rem; border-bottom: 2px solid #e3e6ea; }
h3 { font-size: 1.05rem; margin: 1.5rem 0 .5rem; }
.subtitle { color: #5b6773; margin: 0; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; width: 100%; font-size: .9rem; }
th, td { padding: .4rem .6rem; text-align: left; vertical-align: top; border-bottom: 1px solid #e3e6ea; }
th { background: #eef1f4; font-weight: 600; }
tbody tr:nth-child(even) { background: #f8f9fb; }
.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.swatch { display: inline-block; width: .8em; height: .8em; margin-right: .45em; border-radius: 2px;
          vertical-align: baseline; }
figure { margin: 1.5rem 0; }
figure img { display: block; max-width: 100%; height: auto; border: 1px solid #e3e6ea; }
figcaption { color: #5b6773; font-size: .9rem; margin-top: .4rem; }
pre { background: #f3f5f7; border: 1px solid #e3e6ea; padding: .75rem 1rem; overflow-x: auto;
      white-space: pre-wrap; word-break: break-word; }
"""

# The report must stay inert wherever it is opened: no scripts, no network, only inline styles and data: images.
_CONTENT_SECURITY_POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def render_report_html(inputs: ReportInputs, charts: dict[str, bytes]) -> str:
    """One self-contained HTML document."""
    title = f"Customer segments — run {inputs.run_id}"
    body = _join([
        _tag("h1", title),
        _tag("p", inputs.input_description, "subtitle"),
        _summary_section(inputs),
        _quality_section(inputs.quality, charts.get(_CLEANING_FUNNEL)),
        _segments_section(inputs.profiles),
        _charts_section(charts),
        _reproduce_section(inputs.reproduce_command, inputs.parameters),
    ])
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{_CONTENT_SECURITY_POLICY}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"{_tag('title', title)}\n<style>{_STYLE}</style>\n</head>\n"
        f"<body>\n<main>\n{body}\n</main>\n</body>\n</html>\n"
    )
