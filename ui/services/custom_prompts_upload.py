"""Custom prompts, reading: turn user-supplied problems (CSV, JSONL, TXT or pasted text) into
parsed problems and per-row errors, refusing input that cannot be read as a whole.

Design notes: docs/DESIGN.md, section `ui.services.custom_prompts_upload`.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from pathlib import PurePath

import pandas as pd

from ds_core.episodes.tasks import TaskError, parse_prompt
from ds_core.store import jsonread
from ui.services.custom_prompts_rows import (  # noqa: F401 - re-exported: the upload API
    ERROR_COLUMNS,
    EXPECTED_KEYS,
    EXTENSIONS,
    FORMATS,
    MAX_BYTES,
    MAX_ROW_CHARS,
    MAX_ROWS,
    PREVIEW_CHARS,
    PROMPT_KEYS,
    ParsedPrompt,
    PromptRow,
    PromptSet,
    RowError,
    UploadError,
    by_data_row,
    check_rows,
    decode_bytes,
    numbered_lines,
    preview,
    split_lines,
    too_long,
)


def _given(v) -> str | None:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    if isinstance(v, bool):
        return str(v)
    s = str(v).strip()
    return s or None


def read_text(text: str, source: str = "pasted text") -> PromptSet:
    """One problem per line (blank lines skipped)."""
    if not isinstance(text, str):
        raise UploadError(f"{source}: expected text, got {type(text).__name__}")
    if len(text.encode("utf-8", "surrogatepass")) > MAX_BYTES:
        raise UploadError(f"{source} is over {MAX_BYTES:,} bytes (1 MB); split it")
    lines = numbered_lines(text)
    if not lines:
        raise UploadError(f"{source} has no prompts (every line is blank)")
    check_rows(len(lines), source)
    errors = tuple(e for i, ln in lines if (e := too_long(i, ln)) is not None)
    rows = tuple(PromptRow(i, ln.strip()) for i, ln in lines if len(ln) <= MAX_ROW_CHARS)
    return by_data_row(source, "txt", rows, errors, ())


def _find(keys: Sequence[str], names: Sequence[str]) -> int | None:
    low = [str(n).strip().lower() for n in names]
    for k in keys:
        if k in low:
            return low.index(k)
    return None


def _parses(text: str) -> bool:
    try:
        parse_prompt(text)
        return True
    except TaskError:
        return False


def read_csv(text: str, source: str = "the file", notes: tuple[str, ...] = ()) -> PromptSet:
    sample = text[:8192]
    delimiter = ","
    first = split_lines(sample)[0]
    if "\t" in first and "," not in first:
        delimiter = "\t"
    elif ";" in first and "," not in first:
        delimiter = ";"
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    records: list[tuple[int, list[str]]] = []
    long_rows: list[RowError] = []
    line = 1
    while True:
        try:
            rec = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            if "field larger than field limit" in str(e):  # one over-long row: its error, then go on
                long_rows.append(
                    RowError(
                        line,
                        "(not shown)",
                        f"a field over {csv.field_size_limit():,} characters; the limit is {MAX_ROW_CHARS:,} a row",
                    )
                )
                line = reader.line_num + 1
                continue
            raise UploadError(
                f"{source} is not a well-formed CSV file: {e} (near line {reader.line_num}); "
                f"quote fields that contain the delimiter, or upload a TXT file with one "
                f"problem per line"
            ) from None
        if any(c.strip() for c in rec):
            width = sum(len(c) for c in rec) + len(rec) - 1
            if width > MAX_ROW_CHARS:
                long_rows.append(too_long(line, delimiter.join(rec)))
            else:
                records.append((line, rec))
            if len(records) > MAX_ROWS + 1:  # +1: a header
                raise UploadError(
                    f"{source} has more than {MAX_ROWS} non-empty rows; the limit "
                    f"is {MAX_ROWS}. Split it into smaller files."
                )
        line = reader.line_num + 1
    if not records:
        if long_rows:
            raise UploadError(f"{source} has no rows under {MAX_ROW_CHARS:,} characters")
        raise UploadError(f"{source} has no rows")
    header = records[0][1]
    col = _find(PROMPT_KEYS, header)
    notes = tuple(notes)
    if col is not None:
        body, exp = records[1:], _find(EXPECTED_KEYS, header)
        if exp == col:
            exp = None
    else:
        col, exp = 0, None
        if _parses(header[0]):
            body = records
            notes += ("no 'prompt' column and no header row: the first column is used as the prompt",)
        else:
            body = records[1:]
            exp = _find(EXPECTED_KEYS, header)
            if exp == col:
                exp = None
            notes += (
                f"no 'prompt' column: the first column ({preview(header[0].strip(), 40)!r}) is used as the prompt",
            )
    if not body:
        raise UploadError(f"{source} has a header but no data rows")
    check_rows(len(body), source)
    rows, errors = [], list(long_rows)
    for line, rec in body:
        if col >= len(rec) or not rec[col].strip():
            errors.append(RowError(line, delimiter.join(rec), "no prompt in this row's prompt column"))
            continue
        given = _given(rec[exp]) if exp is not None and exp < len(rec) else None
        rows.append(PromptRow(line, rec[col].strip(), given))
    if delimiter != ",":
        notes += (f"read as {'tab' if delimiter == chr(9) else repr(delimiter)}-separated values",)
    return by_data_row(source, "csv", rows, errors, notes)


def _from_obj(line: int, obj, raw: str) -> PromptRow | RowError:
    if isinstance(obj, str):
        return RowError(
            line, raw, 'a JSON string, expected an object with a \'prompt\' key (like {"prompt": "123*456"})'
        )
    if not isinstance(obj, dict):
        kind = {list: "an array", int: "a number", float: "a number", bool: "a boolean", type(None): "null"}.get(
            type(obj), type(obj).__name__
        )
        return RowError(line, raw, f"{kind}, expected a JSON object with a 'prompt' key")
    keys = {str(k).strip().lower(): v for k, v in obj.items()}
    if "prompt" not in keys:
        return RowError(line, raw, f"object has no 'prompt' key (keys: {', '.join(map(str, obj)) or 'none'})")
    p = keys["prompt"]
    if not isinstance(p, str):
        return RowError(line, raw, f"'prompt' must be text, got {type(p).__name__}")
    if not p.strip():
        return RowError(line, raw, "'prompt' is empty")
    given = next((_given(keys[k]) for k in EXPECTED_KEYS if k in keys), None)
    return PromptRow(line, p.strip(), given)


def read_jsonl(text: str, source: str = "the file", notes: tuple[str, ...] = ()) -> PromptSet:
    lines = numbered_lines(text)
    if not lines:
        raise UploadError(f"{source} has no rows")
    check_rows(len(lines), source)
    rows, errors = [], []
    for i, ln in lines:
        if (long := too_long(i, ln)) is not None:
            errors.append(long)
            continue
        try:
            obj = jsonread.loads(ln, "the row")
        except jsonread.JSONReadError as e:
            errors.append(RowError(i, ln, str(e).removeprefix("the row is ").removeprefix("the row: ")))
            continue
        r = _from_obj(i, obj, ln)
        (errors if isinstance(r, RowError) else rows).append(r)
    return by_data_row(source, "jsonl", rows, errors, notes)


def read_json(text: str, source: str = "the file", notes: tuple[str, ...] = ()) -> PromptSet:
    """A JSON list of objects (with 'prompt') or of strings; anything else is tried as JSONL."""
    try:
        doc = jsonread.loads(text, source)
    except jsonread.JSONReadError as e:
        if "not valid JSON" not in str(e):  # too deep, or a duplicate key: the file's error
            raise UploadError(str(e)) from None
        return read_jsonl(text, source, tuple(notes) + ("not one JSON document: read as JSON Lines",))
    if isinstance(doc, dict):
        return read_jsonl(text, source, notes)
    if not isinstance(doc, list):
        raise UploadError(
            f"{source} holds a single JSON {type(doc).__name__}; expected a list of "
            f"objects with a 'prompt' key, or JSON Lines"
        )
    check_rows(len(doc), source)
    rows, errors = [], []
    for i, obj in enumerate(doc, 1):  # row = position in the list
        if isinstance(obj, str):
            if obj.strip():
                rows.append(PromptRow(i, obj.strip()))
            continue
        r = _from_obj(i, obj, json.dumps(obj, ensure_ascii=False)[:200])
        (errors if isinstance(r, RowError) else rows).append(r)
    if not rows and not errors:
        raise UploadError(f"{source} holds an empty list")
    return PromptSet(
        source, "json", tuple(rows), tuple(errors), tuple(notes) + ("rows are numbered by position in the JSON list",)
    )


def detect_format(name: str, text: str) -> str:
    ext = PurePath(name or "").suffix.lower()
    if ext in EXTENSIONS:
        return EXTENSIONS[ext]
    first = next((ln.strip() for ln in split_lines(text) if ln.strip()), "")
    if first.startswith("{"):
        return "jsonl"
    if first.startswith("["):
        return "json"
    return "txt"


def read_upload(name: str, data: bytes) -> PromptSet:
    """Read an uploaded file (format from its extension; unknown extensions are sniffed)."""
    source = PurePath(name or "upload").name or "upload"
    text, notes = decode_bytes(data, source)
    fmt = detect_format(source, text)
    if fmt == "csv":
        return read_csv(text, source, notes)
    if fmt == "jsonl":
        return read_jsonl(text, source, notes)
    if fmt == "json":
        return read_json(text, source, notes)
    ps = read_text(text, source)
    return PromptSet(ps.source, ps.fmt, ps.rows, ps.errors, notes + ps.notes)


def parse_rows(prompts: PromptSet) -> tuple[tuple[ParsedPrompt, ...], tuple[RowError, ...]]:
    """Parse every row with `parse_prompt`; rows that fail come back as errors (with the read errors)."""
    ok, errors = [], list(prompts.errors)
    for r in prompts.rows:
        try:
            ok.append(ParsedPrompt(r.row, r.prompt, parse_prompt(r.prompt), r.given, r.line))
        except TaskError as e:
            errors.append(RowError(r.row, r.prompt, str(e), line=r.line))
    errors.sort(key=lambda e: e.row)
    return tuple(ok), tuple(errors)


def errors_frame(errors: Sequence[RowError]) -> pd.DataFrame:
    return pd.DataFrame([e.to_dict() for e in errors], columns=list(ERROR_COLUMNS))


def preview_frame(prompts: Sequence[ParsedPrompt]) -> pd.DataFrame:
    """The rows that will run: row, prompt, problem, size, expected answer."""
    return pd.DataFrame(
        [
            {
                "row": p.row,
                "line": p.line,
                "prompt": preview(p.prompt),
                "problem": p.problem.display,
                "size": p.problem.size,
                "expected": str(p.problem.answer),
                "given_answer": p.given,
            }
            for p in prompts
        ],
        columns=["row", "line", "prompt", "problem", "size", "expected", "given_answer"],
    )
