"""Synthetic invoice lines shaped like the UCI Online Retail export, with planted customer archetypes.

This is the pipeline's embedded default input. `generate_transactions` fabricates raw invoice lines
(`schemas.RawTransactions`) of a UK gift wholesaler trading from 2010-12-01 to 2011-12-09, and
returns the archetype every customer was generated from, so a segmentation can be scored
against the truth. Nothing is taken from the real data: the product catalogue is invented.

Archetypes (ranges inclusive; recency = days from the last purchase to the window's last day):

    archetype          share  invoices  recency  span     lines/invoice  units/line  repertoire
    loyal_high_value    10%   15-40     0-20     300-373  6-14           4-24        150-400
    regular_mid_value   25%   6-10      10-90    120-300  4-12           2-12        20-60
    one_off             35%   1         7-373    0        3-8            1-4         8
    lapsed              20%   2         245-373  14-100   10-18          3-12        20-50
    wholesale           10%   6-12      5-60     120-360  10-25          48-600      30-60

`span` is the time from the first to the last purchase, the other invoices fall in between; the
repertoire is the set of products a customer picks from, so it caps their distinct items.
Lapsed customers thus buy only in the first 35% of the window. Every pair of archetypes is
apart in at least two of log recency, invoices, revenue, order value and distinct items.
Small counts are single values or narrow ranges on purpose: after log1p the integers 1, 2, 3
lie far apart, and a density clusterer splits an archetype wherever such a gap exceeds its
radius. For the same reason one-off purchases avoid the last week, where log recency is coarse.

Dirt, as a share of all lines (every kind occurs at least once from MIN_LINES lines on):

    guest checkouts: whole invoices without CustomerID (more in tiny batches)    ~22%
    cancellations: 'C' invoices returning part of an earlier line of the buyer    1.5%
    exact duplicate lines                                                         1.0%
    UnitPrice 0                                                                   0.45%
    POST (customers abroad first), DOT (guest orders), M, PADS on purchases       0.4%
    'C' invoices of M, D, BANK CHARGES, AMAZONFEE, CRUK, S; 'A' bad-debt lines    0.08%

Cancellations, duplicates, zero prices and the non-product codes hit customers of every
archetype alike. Invoice numbers rise with the invoice date within one generated batch.
"""

import math
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import polars as pl

WINDOW_START = datetime(2010, 12, 1)
WINDOW_END = datetime(2011, 12, 9)  # the last trading day, inclusive
WINDOW_DAYS = (WINDOW_END - WINDOW_START).days
CHRISTMAS_CLOSURE = np.arange("2010-12-23", "2011-01-04", dtype="datetime64[D]")
OPENING_MINUTE, CLOSING_MINUTE = 7 * 60, 20 * 60
LAST_SALE_MINUTE = 19 * 60  # leaves room for a same-day cancellation before closing

MIN_LINES = 1_000
FIRST_CUSTOMER_ID = 12346
FIRST_INVOICE_NUMBER = 536365
N_PRODUCTS = 3_800


@dataclass(frozen=True)
class ArchetypeProfile:
    """How one kind of customer shops over the window; ranges are inclusive."""

    share: float
    invoices: tuple[int, int]
    recency_days: tuple[int, int]
    span_days: tuple[int, int]
    lines_per_invoice: tuple[int, int]
    pack_sizes: tuple[int, ...]
    repertoire: tuple[int, int]


PROFILES: dict[str, ArchetypeProfile] = {
    "loyal_high_value": ArchetypeProfile(
        share=0.10, invoices=(15, 40), recency_days=(0, 20), span_days=(300, 373),
        lines_per_invoice=(6, 14), pack_sizes=(4, 6, 8, 12, 16, 24), repertoire=(150, 400),
    ),
    "regular_mid_value": ArchetypeProfile(
        share=0.25, invoices=(6, 10), recency_days=(10, 90), span_days=(120, 300),
        lines_per_invoice=(4, 12), pack_sizes=(2, 3, 4, 6, 8, 10, 12), repertoire=(20, 60),
    ),
    "one_off": ArchetypeProfile(
        share=0.35, invoices=(1, 1), recency_days=(7, WINDOW_DAYS), span_days=(0, 0),
        lines_per_invoice=(3, 8), pack_sizes=(1, 2, 3, 4), repertoire=(8, 8),
    ),
    "lapsed": ArchetypeProfile(
        share=0.20, invoices=(2, 2), recency_days=(245, WINDOW_DAYS), span_days=(14, 100),
        lines_per_invoice=(10, 18), pack_sizes=(3, 4, 6, 8, 10, 12), repertoire=(20, 50),
    ),
    "wholesale": ArchetypeProfile(
        share=0.10, invoices=(6, 12), recency_days=(5, 60), span_days=(120, 360),
        lines_per_invoice=(10, 25), pack_sizes=(48, 72, 96, 144, 200, 288, 400, 600), repertoire=(30, 60),
    ),
}
ARCHETYPES: tuple[str, ...] = tuple(PROFILES)

GUEST_LINE_SHARE = 0.22
GUEST_SINGLE_LINE_SHARE = 0.45  # many guest orders are a single line, the rest are long dotcom baskets
GUEST_PACK_SIZES = (1, 2, 3, 4, 6, 12)
CANCELLED_LINE_SHARE = 0.015
DUPLICATE_LINE_SHARE = 0.01
ZERO_PRICE_LINE_SHARE = 0.0045
MAX_CANCELLATION_DELAY_DAYS = 21

COUNTRY_WEIGHTS = {
    "United Kingdom": 895, "Germany": 22, "France": 20, "EIRE": 10, "Spain": 8, "Netherlands": 6, "Belgium": 6,
    "Switzerland": 5, "Portugal": 5, "Italy": 4, "Australia": 4, "Norway": 3, "Denmark": 3, "Sweden": 3,
    "Finland": 3, "Channel Islands": 3,
}
COUNTRIES = tuple(COUNTRY_WEIGHTS)
HOME_COUNTRY = COUNTRIES.index("United Kingdom")

NON_PRODUCT_DESCRIPTIONS = {
    "POST": "POSTAGE", "DOT": "DOTCOM POSTAGE", "M": "Manual", "PADS": "PADS TO MATCH ALL CUSHIONS",
    "D": "Discount", "BANK CHARGES": "Bank Charges", "AMAZONFEE": "AMAZON FEE", "CRUK": "CRUK Commission",
    "S": "SAMPLES", "B": "Adjust bad debt",
}


@dataclass(frozen=True)
class SideLine:
    """A non-product line added to an existing purchase invoice."""

    stock_code: str
    share: float  # of all lines
    unit_price: tuple[float, float]
    quantity: tuple[int, int]
    on: str  # which invoices get it first: "customer_abroad", "customer" or "guest"


@dataclass(frozen=True)
class OwnInvoiceLine:
    """A non-product line booked alone on a 'C' (quantity -1) or 'A' (quantity 1) invoice."""

    stock_code: str
    share: float  # of all lines
    unit_price: tuple[float, float]
    prefix: str
    with_customer: bool


SIDE_LINES = (
    SideLine("POST", 0.0025, (15.0, 40.0), (1, 3), on="customer_abroad"),
    SideLine("DOT", 0.0013, (50.0, 700.0), (1, 1), on="guest"),
    SideLine("M", 0.0006, (0.5, 50.0), (1, 1), on="customer"),
    SideLine("PADS", 0.00001, (0.001, 0.001), (1, 1), on="customer"),
)
OWN_INVOICE_LINES = (
    OwnInvoiceLine("M", 0.0004, (0.5, 50.0), "C", with_customer=True),
    OwnInvoiceLine("D", 0.00015, (5.0, 100.0), "C", with_customer=True),
    OwnInvoiceLine("BANK CHARGES", 0.00007, (10.0, 100.0), "C", with_customer=False),
    OwnInvoiceLine("AMAZONFEE", 0.00006, (1_000.0, 10_000.0), "C", with_customer=False),
    OwnInvoiceLine("CRUK", 0.00003, (100.0, 900.0), "C", with_customer=True),
    OwnInvoiceLine("S", 0.00012, (1.0, 100.0), "C", with_customer=False),
    OwnInvoiceLine("B", 0.000005, (-15_000.0, -500.0), "A", with_customer=False),
)

# Invented vocabulary for the product names (20 x 15 x 40 = 12,000 possible names).
ADJECTIVES = (
    "VINTAGE", "RETRO", "SMALL", "LARGE", "MINI", "JUMBO", "HANGING", "GLASS", "WOODEN", "METAL",
    "CERAMIC", "PAPER", "FELT", "ENAMEL", "SPOTTY", "STRIPED", "FLORAL", "ANTIQUE", "PAINTED", "KNITTED",
)
COLOURS = (
    "RED", "PINK", "BLUE", "GREEN", "WHITE", "CREAM", "IVORY", "BLACK", "SILVER", "GOLD",
    "LILAC", "ORANGE", "YELLOW", "TURQUOISE", "PASTEL",
)
NOUNS = (
    "HEART", "LANTERN", "BUNTING", "CANDLE HOLDER", "CAKE STAND", "TEA CUP", "DOORSTOP", "PHOTO FRAME",
    "LUNCH BOX", "SHOPPING BAG", "NOTEBOOK", "CUSHION COVER", "WALL CLOCK", "MUG", "STORAGE JAR", "TRAY",
    "BASKET", "PURSE", "UMBRELLA", "APRON", "COASTER SET", "STORAGE TIN", "GIFT WRAP", "BIRD ORNAMENT",
    "PEG BAG", "HOT WATER BOTTLE", "NAPKINS", "SIDE PLATE", "BOWL", "PAPER CHAIN KIT", "DOOR MAT", "MIRROR",
    "WALL SIGN", "KEY RING", "PENCIL CASE", "SPINNING TOP", "SNOW GLOBE", "STICKER SHEET", "TEALIGHTS", "WREATH",
)

RAW_COLUMNS = ("InvoiceNo", "StockCode", "Description", "Quantity", "InvoiceDate", "UnitPrice", "CustomerID", "Country")


@dataclass(frozen=True)
class GeneratedData:
    """Raw invoice lines and the archetype each of their customers was generated from."""

    transactions: pl.DataFrame  # schemas.RawTransactions
    archetypes: pl.DataFrame  # CustomerID (Int64), archetype (String): one row per customer


@dataclass(frozen=True)
class _Catalogue:
    """What a line can refer to: the products, then the non-product codes."""

    stock_codes: pl.Series
    descriptions: pl.Series
    list_prices: np.ndarray  # one per product

    def index_of(self, stock_code: str) -> int:
        """Position of a non-product code in the catalogue."""
        return N_PRODUCTS + list(NON_PRODUCT_DESCRIPTIONS).index(stock_code)


@dataclass(frozen=True)
class _LineCounts:
    """How many lines of each kind one batch gets."""

    duplicates: int
    cancellations: int
    zero_prices: int
    side_lines: tuple[int, ...]
    own_invoice_lines: tuple[int, ...]
    customer_budget: int  # product lines of customers, the rest of the product lines are guests'
    product_lines: int


def generate_transactions(n_lines: int, seed: int = 42) -> GeneratedData:
    """n_lines raw invoice lines and the planted archetype of each customer.

    The count is exact unless one customer of each archetype alone overflows a tiny n_lines.
    """
    _check_n_lines(n_lines)
    return next(_generate_batches(n_lines, seed, batch_lines=n_lines))


def write_generated(directory: Path, n_lines: int, seed: int = 42, batch_lines: int = 2_000_000) -> tuple[Path, Path]:
    """Write <directory>/transactions.parquet and archetypes.parquet; return both paths.

    The lines are generated in batches of about batch_lines (each its own set of customers over the
    whole window), so memory stays bounded however large n_lines is. With batch_lines >= n_lines the
    files hold exactly what generate_transactions(n_lines, seed) returns.
    """
    _check_n_lines(n_lines)
    if batch_lines < MIN_LINES:
        raise ValueError(f"batch_lines must be at least {MIN_LINES:,}, got {batch_lines:,}")
    directory.mkdir(parents=True, exist_ok=True)
    transactions_path, archetypes_path = directory / "transactions.parquet", directory / "archetypes.parquet"
    archetypes = []
    # Parts on disk, then one streaming copy: the single file never has to fit in memory.
    with tempfile.TemporaryDirectory(dir=directory) as parts_directory:
        parts = []
        for number, batch in enumerate(_generate_batches(n_lines, seed, batch_lines)):
            parts.append(Path(parts_directory) / f"part-{number:05d}.parquet")
            batch.transactions.write_parquet(parts[-1])
            archetypes.append(batch.archetypes)
        pl.scan_parquet(parts).sink_parquet(transactions_path)
    pl.concat(archetypes).write_parquet(archetypes_path)
    return transactions_path, archetypes_path


def _check_n_lines(n_lines: int) -> None:
    """Reject sizes too small to hold every archetype and every kind of dirt."""
    if n_lines < MIN_LINES:
        raise ValueError(
            f"n_lines must be at least {MIN_LINES:,} to hold every archetype and kind of dirt, got {n_lines:,}"
        )


def _generate_batches(n_lines: int, seed: int, batch_lines: int) -> Iterator[GeneratedData]:
    """Split n_lines into batches of at most ~batch_lines with fresh customers and invoice numbers each."""
    n_batches = max(1, min(math.ceil(n_lines / batch_lines), n_lines // MIN_LINES))
    seeds = np.random.SeedSequence(seed).spawn(n_batches + 1)
    catalogue = _make_catalogue(np.random.default_rng(seeds[0]))
    first_customer_id, first_invoice_number = FIRST_CUSTOMER_ID, FIRST_INVOICE_NUMBER
    sizes = [n_lines // n_batches + (number < n_lines % n_batches) for number in range(n_batches)]
    for batch_seed, size in zip(seeds[1:], sizes):
        batch, n_invoices = _generate_batch(
            size, np.random.default_rng(batch_seed), catalogue, first_customer_id, first_invoice_number
        )
        first_customer_id += batch.archetypes.height
        first_invoice_number += n_invoices
        yield batch


def _generate_batch(
    n_lines: int, rng: np.random.Generator, catalogue: _Catalogue, first_customer_id: int, first_invoice_number: int
) -> tuple[GeneratedData, int]:
    """One self-contained batch of about n_lines lines, and how many invoice numbers it used."""
    counts = _line_counts(n_lines)
    trading_days = _trading_days()
    customers, customer_invoices = _customer_invoices(rng, counts.customer_budget, trading_days, first_customer_id)
    guest_lines = max(1, counts.product_lines - customer_invoices["lines"].sum())
    # An invoice is known by its row in the batch's invoices: purchases, then cancellations, then the rest.
    purchases = pl.concat([customer_invoices, _guest_invoices(rng, guest_lines, len(trading_days))])
    products = _zero_some_prices(rng, _product_lines(rng, purchases, catalogue), counts.zero_prices)
    cancellation_invoices, cancellations = _cancellations(
        rng, products, purchases, counts.cancellations, len(trading_days)
    )
    own_invoices, own_lines = _own_invoice_lines(
        rng, customers, counts.own_invoice_lines, catalogue, len(trading_days),
        first_invoice=purchases.height + cancellation_invoices.height,
    )
    invoices = pl.concat([purchases.select(cancellation_invoices.columns), cancellation_invoices, own_invoices])
    lines = pl.concat([
        products,
        _side_lines(rng, purchases, counts.side_lines, catalogue),
        _duplicates(rng, products, counts.duplicates),
        cancellations,
        own_lines,
    ])
    transactions = _assemble(invoices, lines, customers, catalogue, trading_days, first_invoice_number)
    archetypes = pl.DataFrame({
        "CustomerID": customers["customer_id"],
        "archetype": pl.Series(ARCHETYPES).gather(customers["archetype"]),
    }).sort("CustomerID")
    return GeneratedData(transactions, archetypes), invoices.height


def _line_counts(n_lines: int) -> _LineCounts:
    """Split n_lines into dirt of each kind and product lines of customers and guests."""
    duplicates = _at_least_one(DUPLICATE_LINE_SHARE, n_lines)
    cancellations = _at_least_one(CANCELLED_LINE_SHARE, n_lines)
    side_lines = tuple(_at_least_one(spec.share, n_lines) for spec in SIDE_LINES)
    own_invoice_lines = tuple(_at_least_one(spec.share, n_lines) for spec in OWN_INVOICE_LINES)
    product_lines = n_lines - duplicates - cancellations - sum(side_lines) - sum(own_invoice_lines)
    return _LineCounts(
        duplicates=duplicates,
        cancellations=cancellations,
        zero_prices=_at_least_one(ZERO_PRICE_LINE_SHARE, n_lines),
        side_lines=side_lines,
        own_invoice_lines=own_invoice_lines,
        customer_budget=round(product_lines * (1 - GUEST_LINE_SHARE)),
        product_lines=product_lines,
    )


def _at_least_one(share: float, n_lines: int) -> int:
    """share of n_lines, rounded, but never zero."""
    return max(1, round(share * n_lines))


def _make_catalogue(rng: np.random.Generator) -> _Catalogue:
    """An invented product range: 5-digit codes (some with a variant letter), names and list prices."""
    numbers = np.sort(rng.choice(np.arange(10_002, 90_000), N_PRODUCTS, replace=False))
    has_variant = rng.random(N_PRODUCTS) < 0.12
    variants = np.where(has_variant, rng.choice(list("ABCDEFGHJKLMNPS"), N_PRODUCTS), "")
    name = rng.choice(len(ADJECTIVES) * len(COLOURS) * len(NOUNS), N_PRODUCTS, replace=False)
    adjective, colour, noun = name // (len(COLOURS) * len(NOUNS)), name // len(NOUNS) % len(COLOURS), name % len(NOUNS)
    descriptions = pl.select(
        pl.concat_str(
            pl.Series(ADJECTIVES).gather(adjective), pl.Series(COLOURS).gather(colour), pl.Series(NOUNS).gather(noun),
            separator=" ",
        )
    ).to_series()
    # Log-normal around 2.10 puts ~90% of list prices between about 0.50 and 9, in steps of 0.05.
    list_prices = np.round(np.clip(rng.lognormal(np.log(2.1), 0.9, N_PRODUCTS), 0.19, 50.0) * 20) / 20
    product_codes = pl.Series(numbers).cast(pl.String) + pl.Series(variants)
    return _Catalogue(
        stock_codes=pl.concat([product_codes, pl.Series(list(NON_PRODUCT_DESCRIPTIONS))]),
        descriptions=pl.concat([descriptions, pl.Series(list(NON_PRODUCT_DESCRIPTIONS.values()))]),
        list_prices=list_prices,
    )


def _trading_days() -> np.ndarray:
    """Day offsets from WINDOW_START on which the shop trades: not on Saturdays, not over Christmas."""
    dates = np.arange(np.datetime64(WINDOW_START.date()), np.datetime64(WINDOW_END.date()) + 1)
    return np.flatnonzero(np.is_busday(dates, weekmask="1111101", holidays=CHRISTMAS_CLOSURE))


def _sale_minutes(rng: np.random.Generator, n: int) -> np.ndarray:
    """Minute of the day of n sales: busiest around lunchtime, none after LAST_SALE_MINUTE."""
    return np.clip(np.rint(rng.normal(12.5 * 60, 130, n)), OPENING_MINUTE, LAST_SALE_MINUTE).astype(np.int64)


def _draw_profile_range(rng: np.random.Generator, field: str, archetype: np.ndarray) -> np.ndarray:
    """One integer per element from the inclusive range `field` of that element's archetype profile."""
    low, high = np.array([getattr(profile, field) for profile in PROFILES.values()]).T
    return rng.integers(low[archetype], high[archetype] + 1)


def _customer_invoices(
    rng: np.random.Generator, line_budget: int, trading_days: np.ndarray, first_customer_id: int
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Customers whose purchase invoices fill about line_budget product lines, and those invoices.

    Customers are drawn in a random order, except that the first ones are one of each archetype,
    and kept while their lines fit the budget, so every archetype occurs and the total is close.
    """
    profiles = PROFILES.values()
    lines_per_customer = sum(p.share * np.mean(p.invoices) * np.mean(p.lines_per_invoice) for p in profiles)
    # Twice the customers expected, so the pool practically never runs dry (guests would fill the gap).
    pool = 2 * math.ceil(line_budget / lines_per_customer) + 50
    shares = [p.share for p in profiles]
    archetype = np.concatenate([np.arange(len(ARCHETYPES)), rng.choice(len(ARCHETYPES), pool, p=shares)])
    n_invoices = _draw_profile_range(rng, "invoices", archetype)
    lines = _draw_profile_range(rng, "lines_per_invoice", np.repeat(archetype, n_invoices))
    cumulative_lines = np.cumsum(np.add.reduceat(lines, np.cumsum(n_invoices) - n_invoices))
    n_customers = max(len(ARCHETYPES), int(np.searchsorted(cumulative_lines, line_budget, side="right")))
    archetype, n_invoices = archetype[:n_customers], n_invoices[:n_customers]
    lines = lines[: n_invoices.sum()]

    customers = pl.DataFrame({
        "customer": np.arange(n_customers),
        "customer_id": first_customer_id + rng.permutation(n_customers),
        "archetype": archetype,
        "country": rng.choice(len(COUNTRIES), n_customers, p=_country_shares()),
    })
    customer = np.repeat(np.arange(n_customers), n_invoices)
    repertoire_start = rng.integers(0, N_PRODUCTS, n_customers)
    invoices = pl.DataFrame({
        "day": _purchase_days(rng, archetype, n_invoices, trading_days),
        "minute": _sale_minutes(rng, len(customer)),
        "customer": customer,
        "country": customers["country"].to_numpy()[customer],
        "prefix": "",
        "lines": lines,
        "pack_group": archetype[customer],
        "repertoire_start": repertoire_start[customer],
        "repertoire_size": _draw_profile_range(rng, "repertoire", archetype)[customer],
    })
    return customers, invoices


def _country_shares() -> np.ndarray:
    """COUNTRY_WEIGHTS as probabilities."""
    weights = np.array(list(COUNTRY_WEIGHTS.values()), dtype=np.float64)
    return weights / weights.sum()


def _purchase_days(
    rng: np.random.Generator, archetype: np.ndarray, n_invoices: np.ndarray, trading_days: np.ndarray
) -> np.ndarray:
    """Trading-day index of every invoice, customer by customer, from each archetype's recency and span."""
    last_day = WINDOW_DAYS - _draw_profile_range(rng, "recency_days", archetype)
    first_day = np.maximum(last_day - _draw_profile_range(rng, "span_days", archetype), 0)
    customer = np.repeat(np.arange(len(archetype)), n_invoices)
    rank_in_customer = np.arange(len(customer)) - np.repeat(np.cumsum(n_invoices) - n_invoices, n_invoices)
    position_in_span = rng.random(len(customer))
    position_in_span[rank_in_customer == 0] = 1.0  # the last purchase, which sets the recency
    position_in_span[rank_in_customer == 1] = 0.0  # the first purchase, which sets the span
    span = last_day - first_day
    calendar_day = first_day[customer] + np.rint(position_in_span * span[customer]).astype(np.int64)
    # A purchase planned on a closed day happens on the trading day before.
    return np.searchsorted(trading_days, calendar_day, side="right") - 1


def _guest_invoices(rng: np.random.Generator, n_lines: int, n_trading_days: int) -> pl.DataFrame:
    """Guest checkouts holding exactly n_lines product lines: many single lines, some long dotcom baskets."""
    is_single = rng.random(n_lines) < GUEST_SINGLE_LINE_SHARE
    sizes = np.where(is_single, 1, np.clip(rng.lognormal(np.log(25), 1.0, n_lines), 2, 400).astype(np.int64))
    n_invoices = int(np.searchsorted(np.cumsum(sizes), n_lines)) + 1
    sizes = sizes[:n_invoices]
    sizes[-1] -= sizes.sum() - n_lines
    return pl.DataFrame({
        "day": rng.integers(0, n_trading_days, n_invoices),
        "minute": _sale_minutes(rng, n_invoices),
        "customer": np.full(n_invoices, -1),
        "country": rng.choice(len(COUNTRIES), n_invoices, p=_country_shares()),
        "prefix": "",
        "lines": sizes,
        "pack_group": np.full(n_invoices, len(ARCHETYPES)),
        "repertoire_start": rng.integers(0, N_PRODUCTS, n_invoices),
        "repertoire_size": np.full(n_invoices, N_PRODUCTS),
    })


def _product_lines(rng: np.random.Generator, purchases: pl.DataFrame, catalogue: _Catalogue) -> pl.DataFrame:
    """Fill every purchase invoice with distinct products from its buyer's repertoire, in pack-size quantities."""
    n_lines = purchases["lines"].to_numpy()
    invoice = np.repeat(np.arange(purchases.height), n_lines)
    position = np.arange(len(invoice)) - np.repeat(np.cumsum(n_lines) - n_lines, n_lines)
    repertoire_size = purchases["repertoire_size"].to_numpy()
    # Consecutive slots of the repertoire, so no product appears twice on one invoice.
    slot = (rng.integers(0, repertoire_size)[invoice] + position) % repertoire_size[invoice]
    item = (purchases["repertoire_start"].to_numpy()[invoice] + slot) % N_PRODUCTS
    pack_group = purchases["pack_group"].to_numpy()[invoice]
    quantity = np.empty(len(invoice), dtype=np.int64)
    for group, pack_sizes in enumerate([p.pack_sizes for p in PROFILES.values()] + [GUEST_PACK_SIZES]):
        in_group = pack_group == group
        quantity[in_group] = rng.choice(pack_sizes, in_group.sum())
    return pl.DataFrame({
        "invoice": invoice, "position": position, "item": item, "quantity": quantity,
        "unit_price": catalogue.list_prices[item],
    })


def _zero_some_prices(rng: np.random.Generator, lines: pl.DataFrame, n: int) -> pl.DataFrame:
    """Set UnitPrice to 0 on n random lines, as the till sometimes did."""
    unit_price = lines["unit_price"].to_numpy().copy()
    unit_price[rng.choice(lines.height, n, replace=False)] = 0.0
    return lines.with_columns(unit_price=unit_price)


def _line_prices(rng: np.random.Generator, low: np.ndarray | float, high: np.ndarray | float, n: int) -> np.ndarray:
    """n uniform prices rounded to pennies, never below low (PADS cost a tenth of a penny)."""
    return np.maximum(np.round(rng.uniform(low, high, n), 2), low)


def _pick_invoices(rng: np.random.Generator, preferred: np.ndarray, n: int) -> np.ndarray:
    """n distinct invoice rows, preferred ones first, topped up from the others if too few are preferred."""
    shuffled = [rng.permutation(np.flatnonzero(preferred)), rng.permutation(np.flatnonzero(~preferred))]
    return np.concatenate(shuffled)[:n]


def _side_lines(
    rng: np.random.Generator, purchases: pl.DataFrame, counts: tuple[int, ...], catalogue: _Catalogue
) -> pl.DataFrame:
    """Postage and similar non-product lines, appended to existing purchase invoices."""
    is_guest = purchases["customer"].to_numpy() < 0
    is_abroad = purchases["country"].to_numpy() != HOME_COUNTRY
    preferred = {"customer_abroad": ~is_guest & is_abroad, "customer": ~is_guest, "guest": is_guest}
    frames = []
    for spec, n in zip(SIDE_LINES, counts):
        invoice = _pick_invoices(rng, preferred[spec.on], n)
        frames.append(pl.DataFrame({
            "invoice": invoice,
            "position": purchases["lines"].to_numpy()[invoice],
            "item": np.full(len(invoice), catalogue.index_of(spec.stock_code)),
            "quantity": rng.integers(spec.quantity[0], spec.quantity[1] + 1, len(invoice)),
            "unit_price": _line_prices(rng, *spec.unit_price, len(invoice)),
        }))
    return pl.concat(frames)


def _duplicates(rng: np.random.Generator, lines: pl.DataFrame, n: int) -> pl.DataFrame:
    """Exact copies of n random lines (sorting later puts each right after its original)."""
    return lines[rng.choice(lines.height, n, replace=False)]


def _cancellations(
    rng: np.random.Generator, products: pl.DataFrame, purchases: pl.DataFrame, n: int, n_trading_days: int
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """'C' invoices returning some units of n random priced customer lines, up to three weeks after the sale.

    The lines returned from one purchase invoice share one cancellation invoice.
    """
    customer = purchases["customer"].to_numpy()
    eligible = np.flatnonzero((customer[products["invoice"].to_numpy()] >= 0) & (products["unit_price"].to_numpy() > 0))
    returned = products[np.sort(rng.choice(eligible, min(n, len(eligible)), replace=False))]
    source, cancellation = np.unique(returned["invoice"].to_numpy(), return_inverse=True)
    source_day, source_minute = purchases["day"].to_numpy()[source], purchases["minute"].to_numpy()[source]
    day = np.minimum(source_day + rng.integers(0, MAX_CANCELLATION_DELAY_DAYS + 1, len(source)), n_trading_days - 1)
    earliest_minute = np.where(day == source_day, source_minute + 1, OPENING_MINUTE)
    first_invoice = purchases.height
    invoices = pl.DataFrame({
        "day": day,
        "minute": rng.integers(earliest_minute, CLOSING_MINUTE + 1),
        "customer": customer[source],
        "country": purchases["country"].to_numpy()[source],
        "prefix": "C",
    })
    lines = returned.with_columns(
        invoice=first_invoice + cancellation,
        quantity=-rng.integers(1, returned["quantity"].to_numpy() + 1),
    )
    return invoices, lines


def _own_invoice_lines(
    rng: np.random.Generator,
    customers: pl.DataFrame,
    counts: tuple[int, ...],
    catalogue: _Catalogue,
    n_trading_days: int,
    first_invoice: int,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Fees, discounts, samples and bad-debt adjustments, each alone on its own 'C' or 'A' invoice."""
    spec = np.repeat(np.arange(len(OWN_INVOICE_LINES)), counts)
    n = len(spec)
    with_customer = np.array([s.with_customer for s in OWN_INVOICE_LINES])[spec]
    customer = np.where(with_customer, rng.integers(0, customers.height, n), -1)
    prefix = np.array([s.prefix for s in OWN_INVOICE_LINES])[spec]
    low, high = np.array([s.unit_price for s in OWN_INVOICE_LINES]).T
    invoice = first_invoice + np.arange(n)
    invoices = pl.DataFrame({
        "day": rng.integers(0, n_trading_days, n),
        "minute": _sale_minutes(rng, n),
        "customer": customer,
        "country": np.where(with_customer, customers["country"].to_numpy()[np.maximum(customer, 0)], HOME_COUNTRY),
        "prefix": prefix,
    })
    lines = pl.DataFrame({
        "invoice": invoice,
        "position": np.zeros(n, dtype=np.int64),
        "item": np.array([catalogue.index_of(s.stock_code) for s in OWN_INVOICE_LINES])[spec],
        "quantity": np.where(prefix == "C", -1, 1),
        "unit_price": _line_prices(rng, low[spec], high[spec], n),
    })
    return invoices, lines


def _assemble(
    invoices: pl.DataFrame,
    lines: pl.DataFrame,
    customers: pl.DataFrame,
    catalogue: _Catalogue,
    trading_days: np.ndarray,
    first_invoice_number: int,
) -> pl.DataFrame:
    """Number the invoices in date order, put the lines in invoice order and spell out the raw columns."""
    day, minute = invoices["day"].to_numpy(), invoices["minute"].to_numpy()
    number = np.empty(invoices.height, dtype=np.int64)
    number[np.lexsort((minute, day))] = first_invoice_number + np.arange(invoices.height)
    minutes_since_start = (trading_days[day] * 24 * 60 + minute).astype("timedelta64[m]")
    timestamp = np.datetime64(WINDOW_START, "us") + minutes_since_start.astype("timedelta64[us]")
    header = invoices.join(
        customers.select("customer", "customer_id"), on="customer", how="left", maintain_order="left"
    )
    header = pl.DataFrame({
        "InvoiceNo": header["prefix"] + pl.Series(number).cast(pl.String),
        "InvoiceDate": timestamp,
        "CustomerID": header["customer_id"].cast(pl.Int64),
        "Country": pl.Series(COUNTRIES).gather(header["country"]),
    })
    # Sort the narrow numeric lines, not the wide text; stable, so duplicates stay next to their original.
    lines = lines.with_columns(number=number[lines["invoice"].to_numpy()])
    lines = lines.sort("number", "position", maintain_order=True)
    item = lines["item"]
    return (
        header[lines["invoice"].to_numpy()]
        .with_columns(
            StockCode=catalogue.stock_codes.gather(item),
            Description=catalogue.descriptions.gather(item),
            Quantity=lines["quantity"].cast(pl.Int64),
            UnitPrice=lines["unit_price"].cast(pl.Float64),
        )
        .select(RAW_COLUMNS)
    )
