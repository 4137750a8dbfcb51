"""Sampling settings: the one `SamplingConfig`, validated once, importable without torch.

The CLI, the pages and every service build their settings here, so a bad temperature gets the
same message everywhere. `key()` is what identifies a sampled run in the results store.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields

from ds_core.episodes.tasks import Problem
from ds_core.errors import UserError

MAX_ATTEMPTS = 32


class RolloutError(UserError, ValueError):
    """A rollout request that cannot be run (bad settings, prompt longer than the context)."""


def _number(name: str, v, integer: bool = False):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (integer and not float(v).is_integer()):
        kind = "an integer" if integer else "a number"
        raise RolloutError(f"{name} must be {kind}, got {v!r}")
    return int(v) if integer else float(v)


@dataclass(frozen=True)
class SamplingConfig:
    temperature: float = 1.0
    top_p: float = 1.0
    max_attempts: int = 4
    max_new_tokens: int | None = None  # None: a per-problem budget from the format
    batch_size: int = 256

    def __post_init__(self):
        t = _number("temperature", self.temperature)
        if not (math.isfinite(t) and 0 <= t <= 100):
            raise RolloutError(f"temperature must be in [0, 100], got {self.temperature}")
        p = _number("top_p", self.top_p)
        if not (math.isfinite(p) and 0 < p <= 1):
            raise RolloutError(f"top_p must be in (0, 1], got {self.top_p}")
        m = _number("max_attempts", self.max_attempts, integer=True)
        if not 1 <= m <= MAX_ATTEMPTS:
            raise RolloutError(f"max_attempts must be in 1..{MAX_ATTEMPTS}, got {self.max_attempts}")
        budget = self.max_new_tokens
        if budget is not None:
            budget = _number("max_new_tokens", budget, integer=True)
            if not 1 <= budget <= 1_000_000:
                raise RolloutError(f"max_new_tokens must be positive, got {self.max_new_tokens}")
        b = _number("batch_size", self.batch_size, integer=True)
        if not 1 <= b <= 100_000:
            raise RolloutError(f"batch_size must be positive, got {self.batch_size}")
        for name, v in (
            ("temperature", t),
            ("top_p", p),
            ("max_attempts", m),
            ("max_new_tokens", budget),
            ("batch_size", b),
        ):
            object.__setattr__(self, name, v)

    def to_dict(self) -> dict:
        return asdict(self)

    def key(self) -> dict:
        """The settings that change what is sampled (batch size does not)."""
        d = self.to_dict()
        d.pop("batch_size")
        return d

    @classmethod
    def coerce(cls, cfg=None) -> SamplingConfig:
        """A SamplingConfig from None (the defaults), a SamplingConfig, or a mapping of its
        fields (so a caller can describe settings as plain data). RolloutError otherwise."""
        if cfg is None:
            return cls()
        if isinstance(cfg, cls):
            return cfg
        if not isinstance(cfg, Mapping):
            raise RolloutError(f"sampling settings must be a mapping, got {type(cfg).__name__}")
        unknown = set(cfg) - {f.name for f in fields(cls)}
        if unknown:
            raise RolloutError(f"unknown sampling settings: {', '.join(sorted(map(str, unknown)))}")
        return cls(**cfg)


@dataclass(frozen=True)
class Prefix:
    """A request: a problem and the token ids to continue (the prompt, or a longer prefix)."""

    problem: Problem | None
    ids: tuple[int, ...]
    prompt_len: int
