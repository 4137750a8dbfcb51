"""Custom prompts, the rows: what an upload is read into (PromptRow, RowError, PromptSet,
ParsedPrompt), the limits on a file and on a row, decoding, and line splitting.

Lines split on \\n and \\r\\n only (not on the other separators str.splitlines knows, which may
sit inside a JSON string or a CSV field); a row over MAX_ROW_CHARS is that row's error.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ds_core.episodes.tasks import Problem, TaskError

MAX_BYTES = 1_000_000
MAX_ROWS = 500
MAX_ROW_CHARS = 10_000  # a longer row is that row's error, not the file's
PREVIEW_CHARS = 80
FORMATS = ("csv", "jsonl", "json", "txt")
EXTENSIONS = {
    ".csv": "csv",
    ".tsv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".txt": "txt",
    ".text": "txt",
}
PROMPT_KEYS = ("prompt",)
EXPECTED_KEYS = ("expected", "answer", "expected_answer")
ERROR_COLUMNS = ("row", "line", "prompt", "checkpoint", "error")


class UploadError(TaskError):
    """The whole input cannot be read (too large, binary, not UTF-8, malformed CSV, no rows)."""


# --- rows ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PromptRow:
    row: int  # 1-based data row (a CSV header and blank lines are not rows)
    prompt: str
    given: str | None = None  # the source's expected answer, as written (None: not given)
    line: int | None = None  # its line in the file (None: a JSON list, numbered by position)


@dataclass(frozen=True)
class RowError:
    row: int
    prompt: str
    error: str
    checkpoint: str = ""  # "" for a row no checkpoint can run (it does not parse)
    line: int | None = None

    def to_dict(self) -> dict:
        return {
            "row": self.row,
            "line": self.line,
            "prompt": preview(self.prompt),
            "checkpoint": self.checkpoint,
            "error": self.error,
        }


@dataclass(frozen=True)
class PromptSet:
    source: str  # file name, or "pasted text"
    fmt: str  # csv | jsonl | json | txt
    rows: tuple[PromptRow, ...]
    errors: tuple[RowError, ...] = ()  # rows that could not be read at all (JSONL)
    notes: tuple[str, ...] = ()  # how the input was read (column used, encoding, ...)

    @property
    def n_rows(self) -> int:
        return len(self.rows) + len(self.errors)


@dataclass(frozen=True)
class ParsedPrompt:
    row: int
    prompt: str
    problem: Problem
    given: str | None = None
    line: int | None = None


def by_data_row(source: str, fmt: str, rows, errors, notes) -> PromptSet:
    """The PromptSet with rows and errors numbered by data row (1 = the first row that is data: no
    header, no blank line), each keeping its file line in `line`. Readers collect them by line."""
    lines = sorted({r.row for r in rows} | {e.row for e in errors})
    rank = {ln: i for i, ln in enumerate(lines, 1)}
    return PromptSet(
        source,
        fmt,
        tuple(replace(r, row=rank[r.row], line=r.row) for r in rows),
        tuple(replace(e, row=rank[e.row], line=e.row) for e in errors),
        tuple(notes),
    )


def preview(text: str, n: int = PREVIEW_CHARS) -> str:
    text = text.replace("\r", " ").replace("\n", " ")
    return text if len(text) <= n else text[: n - 1] + "…"


# --- reading -----------------------------------------------------------------------------------
def decode_bytes(data: bytes, source: str = "the file") -> tuple[str, tuple[str, ...]]:
    """UTF-8 (or UTF-8 with a byte-order mark) text; anything else raises UploadError."""
    if not isinstance(data, (bytes, bytearray)):
        raise UploadError(f"{source}: expected bytes, got {type(data).__name__}")
    if len(data) > MAX_BYTES:
        raise UploadError(
            f"{source} is {len(data):,} bytes; the limit is {MAX_BYTES:,} bytes (1 MB). Split it into smaller files."
        )
    if not data.strip():
        raise UploadError(f"{source} is empty: nothing to run")
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise UploadError(f"{source} is UTF-16 text; save it as UTF-8 and upload it again")
    if b"\x00" in data:
        raise UploadError(
            f"{source} looks like a binary file (it contains NUL bytes); upload a CSV, JSONL or TXT text file"
        )
    notes: tuple[str, ...] = ()
    for enc in ("utf-8", "utf-8-sig"):
        try:
            text = data.decode(enc)
        except UnicodeDecodeError as e:
            err = e
            continue
        if text.startswith("\ufeff"):
            text, notes = text[1:], ("a UTF-8 byte-order mark was skipped",)
        return text, notes
    line = data[: err.start].count(b"\n") + 1
    raise UploadError(
        f"{source} is not UTF-8 text: byte 0x{data[err.start]:02x} on line {line} "
        f"cannot be decoded; save the file as UTF-8 and upload it again"
    )


def check_rows(n: int, source: str) -> None:
    if n > MAX_ROWS:
        raise UploadError(f"{source} has {n:,} non-empty rows; the limit is {MAX_ROWS}. Split it into smaller files.")


def split_lines(text: str) -> list[str]:
    """Lines split on \\n and \\r\\n only: not on U+2028/U+2029, form feeds or the other
    separators str.splitlines knows, which may sit inside a JSON string."""
    lines = text.split("\n")
    return [ln[:-1] if ln.endswith("\r") else ln for ln in lines]


def numbered_lines(text: str) -> list[tuple[int, str]]:
    return [(i, ln) for i, ln in enumerate(split_lines(text), 1) if ln.strip()]


def too_long(line: int, text: str) -> RowError | None:
    if len(text) <= MAX_ROW_CHARS:
        return None
    return RowError(line, preview(text), f"the row is {len(text):,} characters; the limit is {MAX_ROW_CHARS:,}")
