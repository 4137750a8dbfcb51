"""The paper's published numbers, for side-by-side tables and the app's reference overlay.

Zhao et al. 2026 (arXiv 2601.01580), Table 1: accuracy % on 100 problems per size, Qwen2.5-7B.
"""

from __future__ import annotations

SIZES = ("3x3", "3x4", "3x5", "3x6", "3x7", "3x8", "3x9")
TABLE1 = {
    "base": (74, 34, 5, 1, 4, 3, 1),
    "sft": (75, 32, 6, 2, 1, 0, 1),
    "sft_reflection": (96, 92, 94, 49, 4, 1, 0),
    "rl": (98, 91, 92, 90, 72, 53, 34),
}
LABELS = {"base": "Base", "sft": "SFT, no reflection", "sft_reflection": "SFT, reflection", "rl": "RL"}
N = 100


def table1_accuracy(condition: str, size: str) -> float | None:
    """The paper's accuracy (0..1) for a condition and size, None when it has no such cell."""
    row = TABLE1.get(condition)
    if row is None or size not in SIZES:
        return None
    return row[SIZES.index(size)] / 100
