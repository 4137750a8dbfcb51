"""ui.services.timings: estimates are medians of measured rates, absent until something is timed."""

from __future__ import annotations

import pytest

from ui.services import timings as T


@pytest.fixture(autouse=True)
def fresh():
    T.clear()
    yield
    T.clear()


def test_no_measurement_no_estimate():
    assert T.estimate("x", "h", 10) is None and T.per_unit("x", "h") is None
    assert "has been timed on this machine yet" in T.estimate_text("x", "h", 10, "attribution")


def test_estimates_are_the_median_rate_times_the_units():
    T.record("x", "h", 2.0, 10)  # 0.2 s per unit
    T.record("x", "h", 9.0, 10)  # 0.9: an outlier does not move the median of three far
    T.record("x", "h", 3.0, 10)
    assert T.per_unit("x", "h") == pytest.approx(0.3) and T.estimate("x", "h", 100) == pytest.approx(30)
    assert T.estimate("x", "other checkpoint", 1) is None and T.estimate("y", "h", 1) is None
    text = T.estimate_text("x", "h", 100, "attribution")
    assert text.startswith("About 30 s for 100 attributions") and "measured on this machine" in text
    for bad in ((0, 1), (1, 0), (float("nan"), 1), ("a", 1)):
        T.record("x", "h", *bad)  # ignored
    assert T.per_unit("x", "h") == pytest.approx(0.3)
    for _ in range(T.KEEP + 5):
        T.record("z", "h", 1.0, 1)
    assert len(T._RATES[("z", "h")]) == T.KEEP  # noqa: SLF001 - bounded
    assert T.seconds_text(0.2) == "under a second" and T.seconds_text(600) == "about 10 min"
