"""Every CSV DS-Lens writes neutralises formula-leading text cells (OWASP) and keeps numbers."""

from __future__ import annotations

import csv
import io
import math

import pandas as pd
import pytest

from ds_core.store.csvio import neutralise, rows_text, safe_frame, to_csv, write_rows

ATTACKS = ["=cmd|' /C calc'!A0", "+SUM(A1)", "-2+3+cmd|' /C calc'!A0", "@SUM(1)", "\t=1+1", "\r=1", '=HYPERLINK("x")']


@pytest.mark.parametrize("cell", ATTACKS)
def test_formula_cells_get_a_quote(cell):
    assert neutralise(cell) == "'" + cell


@pytest.mark.parametrize("cell", ["-3.5", "+12", "-1e-3", "42", "", "123*456", "a=b", " =x", "'=already"])
def test_other_cells_are_unchanged(cell):
    assert neutralise(cell) == cell


def test_frames_keep_numbers_and_neutralise_text(tmp_path):
    df = pd.DataFrame(
        {
            "prompt": ["=cmd|' /C calc'!A0", "12*34", "-7"],
            "ratio": [-1.5, math.inf, -math.inf],
            "n": [-3, 0, 4],
            "=bad header": ["@x", None, "+1"],
        }
    )
    text = to_csv(df)
    back = list(csv.reader(io.StringIO(text)))
    assert back[0] == ["prompt", "ratio", "n", "'=bad header"]
    assert [r[0] for r in back[1:]] == ["'=cmd|' /C calc'!A0", "12*34", "-7"]
    assert [r[1] for r in back[1:]] == ["-1.5", "inf", "-inf"] and [r[2] for r in back[1:]] == ["-3", "0", "4"]
    assert [r[3] for r in back[1:]] == ["'@x", "", "+1"]
    assert df.loc[0, "prompt"].startswith("=")  # the caller's frame is not changed
    to_csv(df, tmp_path / "x.csv")
    assert (tmp_path / "x.csv").read_text() == text
    assert safe_frame(df)["ratio"].equals(df["ratio"])


def test_row_writers(tmp_path):
    write_rows(tmp_path / "log.csv", [{"step": 1, "note": "=1+1"}, {"step": 2, "note": "-0.5"}], ["step", "note"])
    assert list(csv.reader(open(tmp_path / "log.csv"))) == [["step", "note"], ["1", "'=1+1"], ["2", "-0.5"]]
    assert rows_text([["=x", 1.5]]).strip() == "'=x,1.5"


def test_the_apps_table_download_is_neutralised():
    """ui.common.table: the CSV behind every table's download button."""
    from ui.common import table

    got = {}

    class Container:
        def dataframe(self, *a, **k):
            pass

        def download_button(self, label, data, **k):
            got["data"] = data

    table(pd.DataFrame({"prompt": ["=cmd|' /C calc'!A0"], "k": [-2]}), "errors", container=Container())
    assert got["data"].decode().splitlines() == ["prompt,k", "'=cmd|' /C calc'!A0,-2"]
