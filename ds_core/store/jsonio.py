"""JSON for results: one policy for the values JSON has no word for, used by everything DS-Lens writes.

to_jsonable(x)     nan -> null, +inf -> "inf", -inf -> "-inf"; tuples -> lists; numpy scalars
                   and arrays -> Python; Path -> str. The output is strict JSON.
from_jsonable(x)   the strings "inf", "-inf" (and "nan", written by older versions) -> floats.
canonical_json(x)  stable JSON for hashing keys: sorted keys, compact, integral floats written
                   as ints (1.0 -> 1); nan/inf refused (a key must be exact).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

NONFINITE = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}


class JSONEncodeError(ValueError):
    """A value that JSON cannot hold."""


def _float(x: float, canon: bool):
    if math.isfinite(x):
        return int(x) if canon and x.is_integer() else x
    if canon:
        raise JSONEncodeError("nan/inf cannot be part of a key")
    return None if math.isnan(x) else ("inf" if x > 0 else "-inf")


def to_jsonable(x: Any, *, _canon: bool = False) -> Any:
    """A JSON-safe copy of `x` (the policy in the module docstring)."""
    if isinstance(x, float):
        return _float(x, _canon)
    if x is None or isinstance(x, (str, bool, int)):
        return x
    if isinstance(x, Mapping):
        return {str(k): to_jsonable(v, _canon=_canon) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [to_jsonable(v, _canon=_canon) for v in x]
    if isinstance(x, Path):
        return str(x)
    if hasattr(x, "tolist"):  # numpy scalars and arrays
        return to_jsonable(x.tolist(), _canon=_canon)
    if type(x).__name__ in ("NAType", "NaTType"):  # pandas' missing values
        return None
    raise TypeError(f"{type(x).__name__} value {x!r} is not JSON-serialisable")


def from_jsonable(x: Any) -> Any:
    """The inverse of to_jsonable's non-finite strings, recursively."""
    if isinstance(x, str):
        return NONFINITE.get(x, x)
    if isinstance(x, Mapping):
        return {k: from_jsonable(v) for k, v in x.items()}
    if isinstance(x, list):
        return [from_jsonable(v) for v in x]
    return x


def as_float(x: Any) -> float:
    """A number read back from JSON: null -> nan, "inf"/"-inf"/"nan" -> the float."""
    return math.nan if x is None else float(NONFINITE.get(x, x) if isinstance(x, str) else x)


def dumps(x: Any, what: str = "value") -> str:
    """Compact strict JSON of `x`; StoreError (ds_core.store) when it cannot be written."""
    try:
        return json.dumps(to_jsonable(x), allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as e:
        from ds_core.store.results import StoreError

        raise StoreError(f"cannot store {what}: {e}") from None


def canonical_json(x: Any) -> str:
    """Stable JSON for hashing: sorted keys, compact, integral floats written as ints (1.0 -> 1)."""
    return json.dumps(to_jsonable(x, _canon=True), sort_keys=True, separators=(",", ":"), allow_nan=False)


def digest_of(x: Any) -> str:
    return hashlib.sha256(canonical_json(x).encode()).hexdigest()


def key_digest(x: Any) -> str:
    """Digest of a key dict for the blob cache; StoreError when it is not a valid key."""
    try:
        return digest_of(x)
    except (TypeError, ValueError) as e:
        from ds_core.store.results import StoreError

        raise StoreError(f"invalid cache key: {e}") from None
