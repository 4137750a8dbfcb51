"""Work units: the pieces a batch job is cut into, and what a worker does with one.

A unit names its checkpoint by path *and* content hash (the worker refuses a checkpoint whose
files hash differently: a stale copy on one node is a failure, not other numbers) and carries
everything else it needs as JSON (problems, episodes, sampling settings, seeds), so any process
that sees the checkpoint's path can run it. Its `digest` (sha256 of its canonical JSON) is how
a job recognises a unit it already finished (ds_core.engine.jobs).

Kinds:
- "sample":    rollout of `problems` with `streams` -> {"episodes": [Episode dicts]};
- "attribute": attribute() of each (episode, objective) pair -> {"results": [AttributionResult dicts]};
- "decisions": decision_values() of `episodes` -> {"rows": [rows of ds_core.analysis.decisions.COLUMNS]},
               and with "optimal" in the payload also {"counts": ds_core.analysis.regret.optimal_counts()};
- "probe":     nothing but where the worker runs the model (the job keys its runs by it).
Every result also says where it ran: {"placement": the model's device/dtype key, "format": the
episode format's key}, which the driver checks against the job's run keys.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ds_core.errors import UserError
from ds_core.store.jsonio import canonical_json, digest_of

KINDS = ("sample", "attribute", "decisions", "probe")


class UnitFailed(UserError, RuntimeError):
    """A unit that retrying cannot fix (a checkpoint missing or different on a worker, an input the
    computation refuses): the job stops with this message."""


@dataclass(frozen=True)
class CheckpointRef:
    """A checkpoint as a worker finds it: its directory and the content hash the job expects."""

    path: str
    hash: str

    def __post_init__(self):
        if not isinstance(self.path, str) or not self.path:
            raise ValueError(f"CheckpointRef.path must be a non-empty string, got {self.path!r}")
        if not isinstance(self.hash, str) or not self.hash:
            raise ValueError(f"CheckpointRef.hash must be a non-empty string, got {self.hash!r}")

    @classmethod
    def of(cls, ckpt) -> CheckpointRef:
        return cls(str(ckpt.path), ckpt.hash)

    def to_dict(self) -> dict:
        return {"path": self.path, "hash": self.hash}


@dataclass(frozen=True)
class WorkUnit:
    kind: str
    checkpoint: CheckpointRef
    payload: Mapping = field(default_factory=dict)
    size: int = 1  # how many episodes (or continuations) the unit stands for, for progress bars

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unit kind must be one of {KINDS}, got {self.kind!r}")
        if not isinstance(self.checkpoint, CheckpointRef):
            raise TypeError(f"WorkUnit.checkpoint must be a CheckpointRef, got {type(self.checkpoint).__name__}")
        canonical_json(dict(self.payload))  # JSON-able, no nan: it travels and is hashed

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "checkpoint": self.checkpoint.to_dict(),
            "payload": dict(self.payload),
            "size": self.size,
        }

    @classmethod
    def from_dict(cls, d: Mapping) -> WorkUnit:
        return cls(d["kind"], CheckpointRef(**d["checkpoint"]), d["payload"], int(d.get("size", 1)))

    @property
    def digest(self) -> str:
        return digest_of({"kind": self.kind, "checkpoint": self.checkpoint.hash, "payload": dict(self.payload)})


def format_settings(fmt) -> dict | None:
    """A text format's non-default settings (its key), which a worker re-applies; None for the default."""
    key = getattr(fmt, "key", None)
    return key() if callable(key) else None


class Loaded:
    """A worker's checkpoints, each loaded once per (path, content hash, format settings)."""

    def __init__(self):
        self._cache: dict = {}

    def get(self, ref: CheckpointRef, fmt: Mapping | None = None):
        from ds_core.models.checkpoint import CheckpointError, content_hash, load_checkpoint

        k = (ref.path, ref.hash, canonical_json(dict(fmt)) if fmt else None)
        if k in self._cache:
            return self._cache[k]
        host = os.uname().nodename
        if not (Path(ref.path) / "config.json").is_file():
            raise UnitFailed(
                f"checkpoint {ref.path} cannot be read on {host}: no config.json there "
                "(the checkpoint must be at the same path on every worker)"
            )
        try:
            found = content_hash(ref.path)
        except (CheckpointError, OSError, ValueError) as e:
            raise UnitFailed(f"checkpoint {ref.path} cannot be read on {host}: {e}") from None
        if found != ref.hash:
            raise UnitFailed(
                f"checkpoint {ref.path} on {host} has content hash {found[:12]}, the job expects "
                f"{ref.hash[:12]}: every worker must see the same files"
            )
        ckpt = load_checkpoint(ref.path)
        if fmt:
            ckpt = _with_format(ckpt, fmt)
        self._cache[k] = ckpt
        return ckpt


def _with_format(ckpt, s: Mapping):
    """`ckpt` with a text format's settings (TextFormat.settings) re-applied."""
    from ds_core.episodes.text_format import with_text_settings

    chat = bool(s.get("chat"))
    out = with_text_settings(
        ckpt,
        system=s.get("system") or "",
        instruction=s.get("instruction") if chat else s.get("template"),
        resample_markers=list(s.get("resample_markers") or ()),
        readers=list(s.get("readers") or ()),
    )
    if format_settings(out.format) != dict(s):
        raise UnitFailed(f"{ckpt.path}: this worker cannot rebuild the job's text format {dict(s)}")
    return out


def _where(ckpt) -> dict:
    from ds_core.analysis.evaluate import placement_key

    return {"placement": placement_key(ckpt.model), "format": format_settings(ckpt.format)}


def execute(unit: WorkUnit, loaded: Loaded) -> dict:
    """Run one unit in this process (a Ray actor, or the driver for the in-process engine)."""
    from ds_core.models.sampling import SamplingConfig

    p = unit.payload
    ckpt = loaded.get(unit.checkpoint, p.get("format"))
    try:
        if unit.kind == "probe":
            return _where(ckpt)
        if unit.kind == "sample":
            return {**_where(ckpt), "episodes": _sample(ckpt, p, SamplingConfig(**p["cfg"]))}
        if unit.kind == "attribute":
            ref = loaded.get(CheckpointRef(**p["ref"])) if p.get("ref") else None
            return {**_where(ckpt), "results": _attribute(ckpt, ref, p)}
        return {**_where(ckpt), **_decisions(ckpt, p, SamplingConfig(**p["cfg"]))}
    except UserError as e:  # bad input for this computation: the same everywhere, so not retried
        raise UnitFailed(f"{unit.kind} unit on {unit.checkpoint.path}: {e}") from None


def _sample(ckpt, p, cfg) -> list[dict]:
    from ds_core.episodes.tasks import Problem
    from ds_core.models.rollout import rollout

    problems = [Problem.from_dict(x) for x in p["problems"]]
    eps = rollout(ckpt.model, ckpt.tokenizer, ckpt.format, problems, cfg, seed=int(p["seed"]), streams=p["streams"])
    return [e.to_dict() for e in eps]


def _attribute(ckpt, ref, p) -> list[dict]:
    from ds_core.attribution.gradient import attribute
    from ds_core.episodes.episode import Episode

    out = []
    for pair in p["pairs"]:  # {"episode": Episode dict, "objective": name, "kw": attribute()'s settings}
        kw = dict(pair["kw"])
        if kw.pop("ref", False):
            kw["ref_model"] = ref
        out.append(attribute(ckpt, Episode.from_dict(pair["episode"]), pair["objective"], **kw).to_dict())
    return out


def _decisions(ckpt, p, cfg) -> dict:
    from ds_core.analysis.decisions import decision_values
    from ds_core.analysis.regret import optimal_counts
    from ds_core.episodes.episode import Episode

    eps = [Episode.from_dict(x) for x in p["episodes"]]
    kw = {"n": int(p["n"]), "seed": int(p["seed"]), "streams": p["streams"]}
    out = {"rows": decision_values(ckpt, eps, cfg, **kw).to_dict("records")}
    if p.get("optimal"):
        out["counts"] = optimal_counts(eps, cfg, ckpt, **kw)
    return out
