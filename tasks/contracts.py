"""Validation at stage boundaries: a Pandera failure becomes one readable DataContractError."""

import pandera.polars as pa
import polars as pl

from tasks.errors import DataContractError

_EXAMPLES_PER_CHECK = 3


def enforce(contract: type[pa.DataFrameModel], frame: pl.DataFrame, stage: str) -> pl.DataFrame:
    """Validate a collected frame (data checks included) and return it; raise DataContractError otherwise."""
    try:
        return contract.validate(frame, lazy=True)
    except pa.errors.SchemaErrors as errors:
        cases = errors.failure_cases
        raise DataContractError(
            f"{stage}: the data breaks the {contract.__name__} contract. {summarize_failures(cases)}",
            failure_cases=cases,
        ) from None


def summarize_failures(cases: pl.DataFrame) -> str:
    """One sentence per failed check: column, check, how many rows and a few example values with row numbers."""
    summaries = []
    for (column, check), group in cases.group_by("column", "check", maintain_order=True):
        examples = ", ".join(
            f"{row['failure_case']!r}" + (f" (index {row['index']})" if row["index"] is not None else "")
            for row in group.head(_EXAMPLES_PER_CHECK).iter_rows(named=True)
        )
        summaries.append(f"column {column!r} fails {check} in {group.height:,} case(s), e.g. {examples}.")
    return " ".join(summaries)
