"""The one CSV writer: every CSV the app or the CLI writes goes through `to_csv` / `write_rows`.

A spreadsheet opens a cell that starts with `=`, `+`, `-`, `@`, a tab or a carriage return as a
formula (`=cmd|' /C calc'!A0` runs a program). As OWASP recommends for CSV injection, such text
cells get a leading single quote, which spreadsheets show as text. Numbers are never changed:
numeric columns are written as they are, and a text cell that is a plain number ("-3.5", "+12",
"-1e-3") keeps its sign.
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import pandas as pd

FORMULA_LEAD = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")


def neutralise(value):
    """`value` with a leading `'` when it is text a spreadsheet would read as a formula."""
    if not isinstance(value, str) or not value.startswith(FORMULA_LEAD) or _NUMBER.fullmatch(value):
        return value
    return "'" + value


def safe_frame(df: pd.DataFrame) -> pd.DataFrame:
    """A copy of `df` whose text cells (and column names) are neutralised; other cells as they are."""
    out = df.copy()
    out.columns = [neutralise(c) for c in out.columns]
    for i in range(out.shape[1]):
        col = out.iloc[:, i]
        if col.dtype == object or pd.api.types.is_string_dtype(col.dtype):
            out.isetitem(i, col.map(neutralise))
    return out


def to_csv(df: pd.DataFrame, path: str | Path | None = None) -> str | None:
    """df.to_csv(index=False) of the neutralised frame: the text, or None after writing `path`."""
    safe = safe_frame(df)
    if path is None:
        return safe.to_csv(index=False)
    safe.to_csv(Path(path), index=False)
    return None


def write_rows(path: str | Path, rows: list[dict], fieldnames: list[str]) -> None:
    """csv.DictWriter rows (neutralised) to `path`."""
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=[neutralise(f) for f in fieldnames])
        w.writeheader()
        for r in rows:
            w.writerow({neutralise(k): neutralise(v) for k, v in r.items()})


def rows_text(rows: list[list]) -> str:
    """Rows written with csv.writer (neutralised), as text."""
    buf = io.StringIO()
    csv.writer(buf).writerows([[neutralise(c) for c in r] for r in rows])
    return buf.getvalue()
