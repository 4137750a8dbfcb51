"""`InputAttributionResult`: one target x source attribution matrix, frozen and serialisable."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ds_core.attribution.input_methods import INPUT_METHODS, TARGETS, InputAttributionError

METHODS, TARGET_KINDS = tuple(INPUT_METHODS), tuple(TARGETS)


def _array(x, name: str, shape: tuple[int, ...]) -> np.ndarray:
    a = np.array(x, dtype=np.float64)
    if a.shape != shape:
        raise InputAttributionError(f"{name} has shape {a.shape}, expected {shape}")
    a.setflags(write=False)
    return a


@dataclass(frozen=True, eq=False)
class InputAttributionResult:
    """A target x source attribution matrix for one episode, method and target function.

    matrix[i, s] is the attribution of target `targets[i]` to the token at position s (0 for
    s >= targets[i]). `target_values[i]` is f at the input; for IG, `baseline_values[i]` is f at
    the baseline and `deltas[i]` the convergence delta sum_s matrix[i, s] - (f(input) - f(baseline))
    (computed from the signed-sum attributions whatever `aggregate` is). `params` holds the
    settings, `timing` seconds (and forward/chunk counts).
    """

    token_ids: tuple[int, ...]
    tokens: tuple[str, ...]
    roles: tuple[str, ...]
    segments: tuple[str, ...]
    targets: tuple[int, ...]
    method: str
    target_kind: str
    matrix: np.ndarray
    target_values: np.ndarray
    baseline_values: np.ndarray | None = None
    deltas: np.ndarray | None = None
    params: dict = field(default_factory=dict)
    timing: dict = field(default_factory=dict)

    def __post_init__(self):
        n = len(self.token_ids)
        for name in ("tokens", "roles", "segments"):
            if len(getattr(self, name)) != n:
                raise InputAttributionError(f"{n} tokens but {len(getattr(self, name))} {name}")
        if self.method not in METHODS:
            raise InputAttributionError(f"unknown method {self.method!r}; choose one of {METHODS}")
        if self.target_kind not in TARGET_KINDS:
            raise InputAttributionError(f"unknown target {self.target_kind!r}; choose one of {TARGET_KINDS}")
        m = len(self.targets)
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731  (frozen)
        for name in ("token_ids", "tokens", "roles", "segments", "targets"):
            set_(name, tuple(getattr(self, name)))
        set_("matrix", _array(self.matrix, "matrix", (m, n)))
        set_("target_values", _array(self.target_values, "target_values", (m,)))
        for name in ("baseline_values", "deltas"):
            if getattr(self, name) is not None:
                set_(name, _array(getattr(self, name), name, (m,)))
        set_("params", dict(self.params))
        set_("timing", dict(self.timing))

    # --- views -----------------------------------------------------------------------------
    @property
    def n_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def n_targets(self) -> int:
        return len(self.targets)

    @property
    def target_tokens(self) -> tuple[str, ...]:
        return tuple(self.tokens[t] for t in self.targets)

    @property
    def relative_deltas(self) -> np.ndarray | None:
        """|delta| / |f(input) - f(baseline)| per target (IG only)."""
        if self.deltas is None:
            return None
        gap = np.abs(self.target_values - self.baseline_values)
        return np.abs(self.deltas) / np.maximum(gap, 1e-12)

    def row(self, target: int) -> np.ndarray:
        """The attributions of the target at position `target` (a row of the matrix)."""
        try:
            return self.matrix[self.targets.index(int(target))]
        except ValueError:
            raise InputAttributionError(f"position {target} is not a target; targets are {self.targets}") from None

    def per_source(self, absolute: bool = False) -> np.ndarray:
        """Per source token: the sum over targets (of |attribution| when absolute)."""
        m = np.abs(self.matrix) if absolute else self.matrix
        return m.sum(axis=0)

    @property
    def segment_labels(self) -> tuple[str, ...]:
        """Episode segments in order of appearance: 'prompt', 'attempt:0', 'decision:0', ..."""
        return tuple(dict.fromkeys(self.segments))

    def segment_matrix(self, absolute: bool = False) -> np.ndarray:
        """[n_targets, n_segments]: each target's attributions summed per segment
        (columns in `segment_labels` order)."""
        m = np.abs(self.matrix) if absolute else self.matrix
        seg = np.array(self.segments, dtype=object)
        return (
            np.stack([m[:, seg == s].sum(axis=1) for s in self.segment_labels], axis=1)
            if self.n_targets
            else np.zeros((0, len(self.segment_labels)))
        )

    def per_segment(self, absolute: bool = False) -> dict[str, float]:
        """Per segment: attributions summed over its tokens and over all targets."""
        totals = self.segment_matrix(absolute).sum(axis=0)
        return {s: float(v) for s, v in zip(self.segment_labels, totals)}

    # --- serialisation ---------------------------------------------------------------------
    def to_dict(self) -> dict:
        """A JSON-serialisable dict (floats as Python floats, arrays as lists)."""
        opt = lambda a: None if a is None else a.tolist()  # noqa: E731
        return {
            "token_ids": list(self.token_ids),
            "tokens": list(self.tokens),
            "roles": list(self.roles),
            "segments": list(self.segments),
            "targets": list(self.targets),
            "method": self.method,
            "target_kind": self.target_kind,
            "matrix": self.matrix.tolist(),
            "target_values": self.target_values.tolist(),
            "baseline_values": opt(self.baseline_values),
            "deltas": opt(self.deltas),
            "params": dict(self.params),
            "timing": dict(self.timing),
        }

    @classmethod
    def from_dict(cls, d: dict) -> InputAttributionResult:
        m, n = len(d["targets"]), len(d["token_ids"])
        matrix = np.array(d["matrix"], dtype=np.float64).reshape(m, n) if m else np.zeros((0, n))
        return cls(
            token_ids=tuple(int(t) for t in d["token_ids"]),
            tokens=tuple(d["tokens"]),
            roles=tuple(d["roles"]),
            segments=tuple(d["segments"]),
            targets=tuple(int(t) for t in d["targets"]),
            method=d["method"],
            target_kind=d["target_kind"],
            matrix=matrix,
            target_values=d["target_values"],
            baseline_values=d.get("baseline_values"),
            deltas=d.get("deltas"),
            params=d.get("params", {}),
            timing=d.get("timing", {}),
        )

    def to_pandas(self):
        """Long format: one row per (target, earlier source token) with positions, tokens, roles,
        segments, the attribution, and the target's value (and IG delta)."""
        import pandas as pd

        rows = []
        for i, t in enumerate(self.targets):
            delta = None if self.deltas is None else float(self.deltas[i])
            for s in range(t):
                rows.append(
                    (
                        t,
                        self.tokens[t],
                        self.roles[t],
                        self.segments[t],
                        s,
                        self.tokens[s],
                        self.roles[s],
                        self.segments[s],
                        float(self.matrix[i, s]),
                        float(self.target_values[i]),
                        delta,
                    )
                )
        return pd.DataFrame(
            rows,
            columns=[
                "target",
                "target_token",
                "target_role",
                "target_segment",
                "source",
                "source_token",
                "source_role",
                "source_segment",
                "attribution",
                "target_value",
                "delta",
            ],
        )

    def __eq__(self, other) -> bool:
        if not isinstance(other, InputAttributionResult):
            return NotImplemented
        same = lambda a, b: (
            (a is None and b is None)
            or (  # noqa: E731
                a is not None and b is not None and np.array_equal(a, b)
            )
        )
        return (
            self.token_ids == other.token_ids
            and self.tokens == other.tokens
            and self.roles == other.roles
            and self.segments == other.segments
            and self.targets == other.targets
            and self.method == other.method
            and self.target_kind == other.target_kind
            and np.array_equal(self.matrix, other.matrix)
            and np.array_equal(self.target_values, other.target_values)
            and same(self.baseline_values, other.baseline_values)
            and same(self.deltas, other.deltas)
            and self.params == other.params
            and self.timing == other.timing
        )

    __hash__ = None
