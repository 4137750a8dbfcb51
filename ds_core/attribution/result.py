"""`AttributionResult`: one frozen, serialisable record per (checkpoint, episode, objective, method).

Per-token arrays cover every position of the episode (prompt included); a prompt token has no
objective term, so its term, share, alignments and norm are exactly 0. Non-finite figures (a ratio
with |G_D| = 0, say) are written by the store's JSON policy (ds_core.store.jsonio: nan -> null,
inf -> "inf") and read back as floats.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from ds_core.store.jsonio import as_float, from_jsonable, to_jsonable

RESULT_VERSION = 1
PER_TOKEN = ("term", "share", "align_D", "align_S", "grad_norm")


@dataclass(frozen=True)
class ComponentFigures:
    """The Gradient Attribution figures for the whole model or one parameter group.

    norm_G_* = |G_S|, |G_D|, |G_O|, |G|; ratio_SD = |G_S|/|G_D| (Figure 1's ratio);
    ratio_SD_per_token = (|G_S|/|S|) / (|G_D|/|D|); cos_SD = cos(G_S, G_D);
    share_S/D/O = <G_S, G>/|G|^2 etc.: the summed per-token shares of each role (they add to 1).
    """

    name: str
    n_params: int
    n_S: int
    n_D: int
    n_O: int
    norm_G_S: float
    norm_G_D: float
    norm_G_O: float
    norm_G: float
    ratio_SD: float
    ratio_SD_per_token: float
    cos_SD: float
    share_S: float
    share_D: float
    share_O: float
    params: tuple[str, ...] = ()

    def row(self) -> dict:
        """The figures (FIGURE_FIELDS) as a flat dict: one table row."""
        return {k: getattr(self, k) for k in FIGURE_FIELDS}

    def to_dict(self) -> dict:
        d = to_jsonable(asdict(self))
        d["params"] = list(self.params)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ComponentFigures:
        kw = {
            f.name: (as_float(d[f.name]) if f.name in FLOAT_FIGURES else d[f.name]) for f in fields(cls) if f.name in d
        }
        kw["params"] = tuple(d.get("params", ()))
        return cls(**kw)


# the figures of ComponentFigures, in order: counts, norms, ratios, cosine, shares
FIGURE_FIELDS = tuple(f.name for f in fields(ComponentFigures) if f.name not in ("name", "n_params", "params"))
FLOAT_FIGURES = tuple(k for k in FIGURE_FIELDS if not k.startswith("n_"))


@dataclass(frozen=True)
class AttributionResult:
    """How one objective's gradient on one episode splits between sampling and decision tokens.

    Per token t (tuples over all positions): `term` l_t, `share` s_t = <grad l_t, G>/|G|^2 (sums to
    1), `align_D` = <grad l_t, G_D>/|G_D|, `align_S` = <grad l_t, G_S>/|G_S|, `grad_norm` |grad l_t|
    (None when computed with norms=False). `figures` is the whole model, `groups` one row per
    parameter group (ds_core.attribution.groups); with `tied_head` the head is inside 'embeddings'.
    `method` names how it was computed, `timing` the seconds per phase.
    """

    objective: str
    params: dict
    method: dict
    tokens: tuple[str, ...]
    token_ids: tuple[int, ...]
    roles: tuple[str, ...]
    segments: tuple[str, ...]
    term: tuple[float, ...]
    share: tuple[float, ...]
    align_D: tuple[float, ...]
    align_S: tuple[float, ...]
    grad_norm: tuple[float, ...] | None
    figures: ComponentFigures
    groups: tuple[ComponentFigures, ...]
    tied_head: bool
    timing: dict
    model_hash: str | None = None
    ref_hash: str | None = None
    model_info: dict = field(default_factory=dict)
    version: int = RESULT_VERSION

    def __post_init__(self):
        n = len(self.token_ids)
        for name in ("tokens", "roles", "segments") + PER_TOKEN:
            v = getattr(self, name)
            if v is not None and len(v) != n:
                raise ValueError(f"{name} has {len(v)} entries for {n} tokens")

    # --- views ---------------------------------------------------------------------------------
    @property
    def ratio(self) -> float:
        return self.figures.ratio_SD

    @property
    def decision_share(self) -> float:
        return self.figures.share_D

    def group(self, name: str) -> ComponentFigures:
        for g in self.groups:
            if g.name == name:
                return g
        raise KeyError(f"no parameter group {name!r}; groups: {', '.join(g.name for g in self.groups)}")

    # --- serialisation -------------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        for k in ("tokens", "token_ids", "roles", "segments"):
            d[k] = list(d[k])
        for k in PER_TOKEN:
            d[k] = None if d[k] is None else to_jsonable(d[k])
        d["figures"] = self.figures.to_dict()
        d["groups"] = [g.to_dict() for g in self.groups]
        d["params"] = to_jsonable(dict(self.params))
        d["timing"] = dict(self.timing)
        d["method"] = dict(self.method)
        d["model_info"] = dict(self.model_info)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> AttributionResult:
        kw = {f.name: d[f.name] for f in fields(cls) if f.name in d}
        for k in ("tokens", "roles", "segments"):
            kw[k] = tuple(kw[k])
        kw["token_ids"] = tuple(int(t) for t in kw["token_ids"])
        for k in PER_TOKEN:
            kw[k] = None if kw.get(k) is None else tuple(as_float(x) for x in kw[k])
        kw["figures"] = ComponentFigures.from_dict(kw["figures"])
        kw["groups"] = tuple(ComponentFigures.from_dict(g) for g in kw["groups"])
        kw["params"] = from_jsonable(dict(kw["params"]))
        return cls(**kw)

    def to_json(self, **kw) -> str:
        import json

        return json.dumps(self.to_dict(), allow_nan=False, **kw)

    @classmethod
    def from_json(cls, text: str) -> AttributionResult:
        """A result from its JSON (ds_core.store.jsonread: bounded, no duplicate keys)."""
        from ds_core.store import jsonread

        return cls.from_dict(jsonread.loads(text, "the attribution result", expect=dict))

    def to_pandas(self):
        """One row per token: pos, token, token_id, role, segment, term, share, align_D, align_S,
        grad_norm (NaN when not computed)."""
        import pandas as pd

        n = len(self.token_ids)
        return pd.DataFrame(
            {
                "pos": range(n),
                "token": list(self.tokens),
                "token_id": list(self.token_ids),
                "role": list(self.roles),
                "segment": list(self.segments),
                "term": list(self.term),
                "share": list(self.share),
                "align_D": list(self.align_D),
                "align_S": list(self.align_S),
                "grad_norm": list(self.grad_norm) if self.grad_norm is not None else [float("nan")] * n,
            }
        )

    def groups_frame(self):
        """One row per parameter group, plus a final 'model' row for the whole model."""
        import pandas as pd

        rows = [{k: v for k, v in asdict(g).items() if k != "params"} for g in self.groups]
        rows.append({k: v for k, v in asdict(self.figures).items() if k != "params"})
        return pd.DataFrame(rows)
