"""The one JSON reader for everything DS-Lens reads from outside its own store: checkpoint files
(config.json, card.json, eval.json, the tokenizer's and generation config's JSON), uploads, the
attribution cache, the shipped data.

It bounds size (bytes) and depth (nesting of arrays and objects, counted before parsing, so a
deeply nested file never reaches the recursive parser) and rejects duplicate keys (a reader that
lets the last one win silently resolves an ambiguous file); `expect` checks the top-level type.
Every failure is a JSONReadError (a UserError) whose message names the file and what is wrong.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from ds_core.errors import UserError

MAX_BYTES = 64 * 1024 * 1024  # a real tokenizer.json is 2-10 MB
MAX_DEPTH = 64  # HF configs nest 3-5 levels, tokenizer.json about 6
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_KIND = {dict: "an object", list: "an array", str: "a string", int: "a number", float: "a number", bool: "a boolean"}


class JSONReadError(UserError, ValueError):
    """JSON that is too big, too deep, ambiguous (a duplicate key), malformed or of the wrong shape."""


def kind_of(x: Any) -> str:
    return "null" if x is None else _KIND.get(type(x), type(x).__name__)


def depth_of(data: bytes) -> int:
    """The deepest nesting of [ and { in JSON text (brackets inside strings do not count)."""
    bare = _STRING.sub(b'""', data)
    a = np.frombuffer(bare, dtype=np.uint8)
    step = np.isin(a, (91, 123)).astype(np.int32) - np.isin(a, (93, 125)).astype(np.int32)
    return int(np.cumsum(step).max(initial=0))


def _no_duplicates(what: str):
    def hook(pairs):
        out = {}
        for k, v in pairs:
            if k in out:
                raise JSONReadError(
                    f"{what}: the key {k!r} appears twice in one object; which one is meant is ambiguous"
                )
            out[k] = v
        return out

    return hook


def loads(
    text: str | bytes,
    what: str = "the JSON",
    *,
    max_bytes: int = MAX_BYTES,
    max_depth: int = MAX_DEPTH,
    expect: type | tuple[type, ...] | None = None,
) -> Any:
    """Parse `text` under the bounds; `what` names it in messages ("config.json of /path")."""
    data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else bytes(text)
    if len(data) > max_bytes:
        raise JSONReadError(f"{what} is {len(data):,} bytes; the limit is {max_bytes:,}")
    depth = depth_of(data)
    if depth > max_depth:
        raise JSONReadError(f"{what} is nested {depth:,} levels deep; the limit is {max_depth}")
    try:
        doc = json.loads(
            data.decode("utf-8-sig") if isinstance(text, bytes) else text, object_pairs_hook=_no_duplicates(what)
        )
    except UnicodeDecodeError as e:
        raise JSONReadError(f"{what} is not valid JSON: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise JSONReadError(f"{what} is not valid JSON: {e.msg} (line {e.lineno}, column {e.colno})") from None
    except RecursionError:  # not reached under max_depth; kept so no caller ever sees one
        raise JSONReadError(f"{what} is nested too deeply to read") from None
    if expect is not None and not isinstance(doc, expect):
        want = " or ".join(kind_of(t()) for t in (expect if isinstance(expect, tuple) else (expect,)))
        raise JSONReadError(f"{what} holds {kind_of(doc)}; expected a JSON {want.replace('an ', '').replace('a ', '')}")
    return doc


def read(path: str | Path, what: str | None = None, **kw) -> Any:
    """loads() of a file, its size checked before it is read."""
    p = Path(path)
    what = what or str(p)
    limit = kw.get("max_bytes", MAX_BYTES)
    try:
        size = p.stat().st_size
        if size > limit:
            raise JSONReadError(f"{what} is {size:,} bytes; the limit is {limit:,}")
        data = p.read_bytes()
    except OSError as e:
        raise JSONReadError(f"{what} cannot be read: {e.strerror or e}") from None
    return loads(data, what, **kw)
