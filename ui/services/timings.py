"""Time estimates measured on the running machine, never typed in: every costly action records how
long it took per unit (an episode, an attribution, an IG step) for its checkpoint, and an estimate
is the median of those rates times the units asked for. Nothing recorded: no estimate (the page
says so). Rates live in the server process (this machine, this load), a bounded list per key.

The calibration page's estimate reads the results store instead (ui.services.calibration_compute),
which keeps the wall time of every stored run."""

from __future__ import annotations

import statistics
import threading

KEEP = 20  # rates kept per (kind, checkpoint)
_LOCK = threading.Lock()
_RATES: dict[tuple[str, str], list[float]] = {}


def record(kind: str, checkpoint: str, seconds: float, units: float) -> None:
    """`units` of `kind` took `seconds` on checkpoint `checkpoint` (its content hash)."""
    try:
        s, u = float(seconds), float(units)
    except (TypeError, ValueError):
        return
    if not (s > 0 and u > 0) or s != s:
        return
    with _LOCK:
        rates = _RATES.setdefault((kind, str(checkpoint)), [])
        rates.append(s / u)
        del rates[:-KEEP]


def per_unit(kind: str, checkpoint: str) -> float | None:
    """The median seconds per unit measured so far, or None."""
    with _LOCK:
        rates = list(_RATES.get((kind, str(checkpoint)), ()))
    return statistics.median(rates) if rates else None


def estimate(kind: str, checkpoint: str, units: float) -> float | None:
    r = per_unit(kind, checkpoint)
    return None if r is None else r * float(units)


def seconds_text(s: float) -> str:
    if s < 1:
        return "under a second"
    if s < 90:
        return f"about {s:.0f} s"
    return f"about {s / 60:.0f} min"


def estimate_text(kind: str, checkpoint: str, units: float, unit_name: str) -> str:
    """'About 12 s (0.3 s per attribution, measured here)' or what happens without a measurement."""
    r = per_unit(kind, checkpoint)
    if r is None:
        return (
            f"No {unit_name} of this checkpoint has been timed on this machine yet: the first run says how "
            "long it took, and later estimates use it."
        )
    return (
        f"{seconds_text(r * float(units)).capitalize()} for {units:g} {unit_name}s "
        f"({r:.2g} s per {unit_name}, measured on this machine)."
    )


def clear() -> None:
    with _LOCK:
        _RATES.clear()
