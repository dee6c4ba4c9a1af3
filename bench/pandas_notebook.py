"""ingest -> clean -> features as a typical notebook writes it in pandas: read, boolean masks, groupby/agg.

Deliberately plain: one frame filtered step by step, in the order of tasks/clean.py's rules, and
the features of tasks/features.py's docstring with groupby/agg and joins.
"""

import numpy as np
import pandas as pd

from schemas.clean_transactions import EARLIEST_PLAUSIBLE_DATE
from tasks.clean import DEFAULT_NON_PRODUCT_CODES

TEXT_COLUMNS = ["InvoiceNo", "StockCode", "Description", "Country"]
REQUIRED_COLUMNS = ["InvoiceNo", "StockCode", "Quantity", "InvoiceDate", "UnitPrice", "Country"]


def read_export(path: str) -> pd.DataFrame:
    """The export with text columns as text and InvoiceDate as datetimes."""
    if path.endswith(".parquet"):
        df = pd.read_parquet(path)
    else:
        df = pd.read_csv(path, dtype={column: str for column in TEXT_COLUMNS}, parse_dates=["InvoiceDate"])
    for column in TEXT_COLUMNS:
        df[column] = df[column].str.strip()
    return df


def clean(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Clean purchase lines and the cancellation lines kept as returns."""
    df = df[df["CustomerID"].notna()]
    df = df.assign(CustomerID=df["CustomerID"].astype("int64"))
    df = df.dropna(subset=REQUIRED_COLUMNS)
    df = df.drop_duplicates()
    df = df[(df["InvoiceDate"] >= EARLIEST_PLAUSIBLE_DATE) & (df["InvoiceDate"] <= pd.Timestamp.now())]
    is_return = df["InvoiceNo"].str.startswith("C") | (df["Quantity"] < 0)
    returns = df[is_return]
    df = df[~is_return]
    df = df[~df["InvoiceNo"].str.startswith("A")]
    codes = [code.upper() for code in DEFAULT_NON_PRODUCT_CODES]
    stock_code = df["StockCode"].str.upper()
    prefixes = tuple(code[:-1] for code in codes if code.endswith("*"))
    df = df[~(stock_code.isin([code for code in codes if not code.endswith("*")]) | stock_code.str.startswith(prefixes))]
    df = df[df["Quantity"] != 0]
    df = df[(df["UnitPrice"] > 0) & np.isfinite(df["UnitPrice"])]
    return df, returns


def features_of(df: pd.DataFrame, returns: pd.DataFrame) -> pd.DataFrame:
    """One row of features per customer, indexed by CustomerID."""
    purchases = df.assign(LineValue=df["Quantity"] * df["UnitPrice"], Year=df["InvoiceDate"].dt.year)
    history = purchases.groupby("CustomerID").agg(
        FirstPurchase=("InvoiceDate", "min"), LastPurchase=("InvoiceDate", "max"),
        FrequencyPurchase=("InvoiceNo", "nunique"), UniqueYears=("Year", "nunique"), Units=("Quantity", "sum"),
    )
    country = purchases.sort_values(["InvoiceDate", "Country"]).groupby("CustomerID")["Country"].last()
    bought = purchases.groupby(["CustomerID", "StockCode"]).agg(
        BoughtUnits=("Quantity", "sum"), BoughtValue=("LineValue", "sum"))
    movements = pd.concat([purchases[returns.columns], returns]).sort_values(["InvoiceDate", "Quantity"],
                                                                         ascending=[True, False])
    balance = movements.groupby(["CustomerID", "StockCode"])["Quantity"].cumsum()
    lowest = balance.groupby([movements["CustomerID"], movements["StockCode"]]).min()
    returned = (-returns["Quantity"]).groupby([returns["CustomerID"], returns["StockCode"]]).sum()
    returned = returned + lowest.clip(upper=0).reindex(returned.index)
    products = bought.join(returned.rename("ReturnedUnits"), how="left")
    matched = products["ReturnedUnits"].fillna(0)
    products["ReturnedValue"] = np.where(matched == products["BoughtUnits"], products["BoughtValue"],
                                         matched * products["BoughtValue"] / products["BoughtUnits"])
    totals = products.groupby(level="CustomerID").agg(
        NumUniqueItems=("BoughtValue", "size"), GrossRevenue=("BoughtValue", "sum"),
        ReturnedValue=("ReturnedValue", "sum"))
    f = history.join(totals).join(country)
    f["Amount"] = f["GrossRevenue"] - f["ReturnedValue"]
    snapshot = f["LastPurchase"].max().normalize() + pd.Timedelta(days=1)
    f["Recency"] = (snapshot - f["LastPurchase"].dt.normalize()).dt.days
    f["Tenure"] = (snapshot - f["FirstPurchase"].dt.normalize()).dt.days
    f["AvgOrderValue"] = f["Amount"] / f["FrequencyPurchase"]
    f["AvgBasketSize"] = f["Units"] / f["FrequencyPurchase"]
    f["ReturnRate"] = (f["ReturnedValue"] / f["GrossRevenue"]).clip(upper=1)
    gaps = f["FrequencyPurchase"] - 1
    first_to_last_days = (f["LastPurchase"] - f["FirstPurchase"]).dt.total_seconds() / 86400
    f["MeanInterpurchaseDays"] = np.where(gaps > 0, first_to_last_days / gaps.where(gaps > 0), f["Tenure"])
    return f.sort_index()


def notebook_features(path: str) -> tuple[pd.DataFrame, int]:
    """Features of the export at `path`, and how many clean lines they came from."""
    lines, returns = clean(read_export(path))
    return features_of(lines, returns), len(lines)
