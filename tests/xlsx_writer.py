"""A fast .xlsx writer for test fixtures: each sheet's XML is built with Polars string expressions.

xlsxwriter needs well over a minute for the 541,909 lines of the real data on a busy 2-core
machine; this needs seconds. Cells are typed as Excel types them: numbers, dates (a serial day
number with a date style) and inline text; a missing value gets no cell. In `numeric_text`
columns, all-digit text is stored as a number, as in the UCI workbook, whose InvoiceNo column
holds the number 536365 next to the text "C536379".
"""

import zipfile
from collections.abc import Collection, Mapping
from datetime import datetime
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

import polars as pl

EXCEL_EPOCH = datetime(1899, 12, 30)  # day 0 of Excel's serial dates (1900 system, leap-year bug included)
MICROSECONDS_PER_DAY = 86_400_000_000
DATE_STYLE = 1  # index into cellXfs below: built-in number format 22, "m/d/yyyy h:mm"
_ROWS_PER_CHUNK = 50_000

_MAIN = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
_RELATIONSHIPS = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
_PACKAGE_RELATIONSHIPS = "http://schemas.openxmlformats.org/package/2006/relationships"
_OFFICE_TYPES = "application/vnd.openxmlformats-officedocument.spreadsheetml"
_STYLES = (
    f'<styleSheet xmlns="{_MAIN}"><fonts count="1"><font/></fonts><fills count="1"><fill/></fills>'
    '<borders count="1"><border/></borders><cellStyleXfs count="1"><xf/></cellStyleXfs>'
    '<cellXfs count="2"><xf/><xf numFmtId="22" applyNumberFormat="1"/></cellXfs></styleSheet>'
)


def write_xlsx(path: Path, sheets: Mapping[str, pl.DataFrame], numeric_text: Collection[str] = ()) -> Path:
    """Write `sheets` (name -> frame, in order) as one workbook at `path`; no sheets gives a workbook without any."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as package:
        package.writestr("[Content_Types].xml", _content_types(len(sheets)))
        package.writestr("_rels/.rels", _relationships([("officeDocument", "xl/workbook.xml")]))
        package.writestr("xl/workbook.xml", _workbook(list(sheets)))
        package.writestr("xl/_rels/workbook.xml.rels", _relationships(
            [("worksheet", f"worksheets/sheet{index}.xml") for index in range(1, len(sheets) + 1)]
            + [("styles", "styles.xml")]
        ))
        package.writestr("xl/styles.xml", _STYLES)
        for index, frame in enumerate(sheets.values(), start=1):
            with package.open(f"xl/worksheets/sheet{index}.xml", "w") as stream:
                stream.write(f'<worksheet xmlns="{_MAIN}"><sheetData>'.encode())
                stream.write(_header_row(frame.columns).encode())
                for offset in range(0, frame.height, _ROWS_PER_CHUNK):
                    rows = frame.slice(offset, _ROWS_PER_CHUNK).with_row_index("row", offset=offset + 2)
                    stream.write(rows.select(_row_xml(frame, numeric_text)).to_series().str.join("").item().encode())
                stream.write(b"</sheetData></worksheet>")
    return path


def _content_types(sheet_count: int) -> str:
    overrides = [("/xl/workbook.xml", "sheet.main+xml"), ("/xl/styles.xml", "styles+xml")] + [
        (f"/xl/worksheets/sheet{index}.xml", "worksheet+xml") for index in range(1, sheet_count + 1)
    ]
    return (
        '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
        '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
        '<Default Extension="xml" ContentType="application/xml"/>'
        + "".join(f'<Override PartName="{part}" ContentType="{_OFFICE_TYPES}.{kind}"/>' for part, kind in overrides)
        + "</Types>"
    )


def _relationships(targets: list[tuple[str, str]]) -> str:
    return f'<Relationships xmlns="{_PACKAGE_RELATIONSHIPS}">' + "".join(
        f'<Relationship Id="rId{index}" Type="{_RELATIONSHIPS}/{kind}" Target="{target}"/>'
        for index, (kind, target) in enumerate(targets, start=1)
    ) + "</Relationships>"


def _workbook(names: list[str]) -> str:
    sheets = "".join(
        f'<sheet name={quoteattr(name)} sheetId="{index}" r:id="rId{index}"/>'
        for index, name in enumerate(names, start=1)
    )
    return f'<workbook xmlns="{_MAIN}" xmlns:r="{_RELATIONSHIPS}"><sheets>{sheets}</sheets></workbook>'


def _column_letter(index: int) -> str:
    """A, B, ..., Z, AA, ... for the 0-based column index."""
    letters = ""
    index += 1
    while index:
        index, remainder = divmod(index - 1, 26)
        letters = chr(ord("A") + remainder) + letters
    return letters


def _header_row(names: list[str]) -> str:
    cells = "".join(
        f'<c r="{_column_letter(index)}1" t="inlineStr"><is><t>{escape(name)}</t></is></c>'
        for index, name in enumerate(names)
    )
    return f'<row r="1">{cells}</row>'


def _row_xml(frame: pl.DataFrame, numeric_text: Collection[str]) -> pl.Expr:
    """One `<row>` element per data row; the frame is expected to have a `row` column with Excel's row numbers."""
    row = pl.col("row").cast(pl.String)
    cells = [
        _cell_xml(name, dtype, _column_letter(index), row, name in numeric_text)
        for index, (name, dtype) in enumerate(frame.schema.items())
    ]
    return pl.concat_str([pl.lit('<row r="'), row, pl.lit('">'), *cells, pl.lit("</row>")])


def _cell_xml(name: str, dtype: pl.DataType, letter: str, row: pl.Expr, numeric_text: bool) -> pl.Expr:
    """The `<c>` element for one column's value, or "" when the value is missing."""
    value = pl.col(name)
    reference = pl.concat_str([pl.lit(f'<c r="{letter}'), row, pl.lit('"')])
    if dtype == pl.Datetime:
        serial = (value - EXCEL_EPOCH).dt.total_microseconds() / MICROSECONDS_PER_DAY
        cell = pl.concat_str([reference, pl.lit(f' s="{DATE_STYLE}"><v>'), serial.cast(pl.String), pl.lit("</v></c>")])
    elif dtype.is_numeric():
        cell = pl.concat_str([reference, pl.lit("><v>"), value.cast(pl.String), pl.lit("</v></c>")])
    else:
        text = value.cast(pl.String)
        escaped = text.str.replace_all("&", "&amp;", literal=True).str.replace_all("<", "&lt;", literal=True)
        cell = pl.concat_str([
            reference, pl.lit(' t="inlineStr"><is><t xml:space="preserve">'),
            escaped.str.replace_all(">", "&gt;", literal=True), pl.lit("</t></is></c>"),
        ])
        if numeric_text:
            number = pl.concat_str([reference, pl.lit("><v>"), text, pl.lit("</v></c>")])
            cell = pl.when(text.str.contains(r"^\d+$")).then(number).otherwise(cell)
    return cell.fill_null("")
