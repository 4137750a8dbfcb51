"""Where the DS lab's runs are and what they are called (no torch: pages and reports read it).
The plan itself (budgets, parents, losses) is ds_core.training.lab."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ds_core.paths import SHIPPED_DIR

LAB_DIR = SHIPPED_DIR / "lab"
SEEDS = (0, 1, 2)
# the lab's conditions in plan order (ds_core.training.lab.CONDITIONS has the same keys, tested)
CONDITION_ORDER = (
    "base",
    "sft",
    "sft_reflection",
    "reflection_balanced",
    "reflection_dft",
    "rl",
    "rl_no_kl",
    "rl_strong_kl",
    "rl_sampling_only",
    "rl_from_sft",
)
_SEED_DIR = re.compile(r"seed(\d{1,4})")


@dataclass(frozen=True)
class LabRun:
    condition: str
    seed: int
    path: Path

    @property
    def has_weights(self) -> bool:
        return (self.path / "config.json").is_file() and (self.path / "model.safetensors").is_file()

    @property
    def label(self) -> str:
        return f"lab/{self.condition}" + (f" · seed {self.seed}" if self.seed else "")


def lab_runs(root: str | Path = LAB_DIR) -> list[LabRun]:
    """Every <root>/<condition>/seed<N>/ folder of a known condition, in plan order then seed."""
    out = []
    for cond in CONDITION_ORDER:
        d = Path(root) / cond
        if not d.is_dir():
            continue
        for p in d.iterdir():
            m = _SEED_DIR.fullmatch(p.name)
            if m and p.is_dir():
                out.append(LabRun(cond, int(m.group(1)), p))
    return sorted(out, key=lambda r: (CONDITION_ORDER.index(r.condition), r.seed))
