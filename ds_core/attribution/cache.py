"""The attribution cache: one AttributionResult per (checkpoint, episode, objective, settings), kept in
the results store's blob cache (kind "attribution"); the key leaves out settings an objective ignores.

Design notes: docs/DESIGN.md, section `ds_core.attribution.dataset` ("Cache").
"""

from __future__ import annotations

import math

from ds_core.attribution.engine import JVP_METHODS, NORMS_METHODS, AttributionError
from ds_core.attribution.gradient import attribute
from ds_core.attribution.result import RESULT_VERSION, AttributionResult
from ds_core.attribution.selection import ALL, normalise
from ds_core.objectives import OBJECTIVES

CACHE_KIND = "attribution"


def objective_needs(objective: str) -> tuple[str, ...]:
    if objective not in OBJECTIVES:
        raise AttributionError(f"unknown objective {objective!r}; valid: {', '.join(OBJECTIVES)}")
    return OBJECTIVES[objective].needs


def _hash_of(obj, given: str | None, what: str) -> str:
    h = given or getattr(obj, "hash", None)
    if not isinstance(h, str) or not h:
        raise ValueError(
            f"caching an attribution needs the {what}'s content hash: pass a ds_core "
            f"Checkpoint, or {'model_hash' if what == 'checkpoint' else 'ref_hash'}="
        )
    return h


def cache_key(
    ckpt,
    episode,
    objective: str,
    *,
    advantage: float | None = None,
    ref_model=None,
    clip_eps: float = 0.2,
    norms: bool = True,
    jvp_method: str = "auto",
    norms_method: str = "auto",
    chunk_size: int = 64,
    model_hash: str | None = None,
    ref_hash: str | None = None,
    parameters: str = "all",
) -> dict:
    """The blob-cache key of one attribution (module docstring). Raises AttributionError for an
    objective's missing input (an advantage, a reference) before anything is computed."""
    needs = objective_needs(objective)
    if jvp_method not in JVP_METHODS:
        raise AttributionError(f"jvp_method must be one of {JVP_METHODS}, got {jvp_method!r}")
    if norms and norms_method not in NORMS_METHODS:
        raise AttributionError(f"norms_method must be one of {NORMS_METHODS}, got {norms_method!r}")
    params = {}
    if "advantages" in needs:
        if advantage is None or not math.isfinite(float(advantage)):
            raise AttributionError(f"objective {objective!r} needs a finite advantage, got {advantage!r}")
        params["advantage"] = float(advantage)
        params["clip_eps"] = float(clip_eps)
    if "ref_logp" in needs:
        if ref_model is None:
            raise AttributionError(f"objective {objective!r} needs ref_model (the reference checkpoint)")
        params["ref"] = _hash_of(ref_model, ref_hash, "reference checkpoint")
    if normalise(parameters) != ALL:  # the default stays out of the key: earlier entries still match
        params["parameters"] = normalise(parameters)
    return {
        "version": RESULT_VERSION,
        "checkpoint": _hash_of(ckpt, model_hash, "checkpoint"),
        "token_ids": [int(t) for t in episode.token_ids],
        "roles": list(episode.roles),
        "objective": objective,
        "method": {
            "jvp_method": jvp_method,
            "norms": bool(norms),
            "norms_method": norms_method if norms else None,
            "chunk_size": int(chunk_size) if norms else None,
        },
        "params": params,
    }


def cached_with_source(ckpt, episode, objective, store, *, recompute=False, **kw) -> tuple[AttributionResult, bool]:
    """(result, whether it came from the store)."""
    if store is None:
        return attribute(ckpt, episode, objective, **kw), False
    key = cache_key(ckpt, episode, objective, **kw)
    if not recompute:
        blob = store.get_blob(CACHE_KIND, key)
        if blob is not None and blob.get("version") == RESULT_VERSION:
            try:
                return AttributionResult.from_dict(blob), True
            except (KeyError, TypeError, ValueError):
                pass  # an unreadable entry: compute again and overwrite it
    result = attribute(ckpt, episode, objective, **kw)
    store.put_blob(CACHE_KIND, key, result.to_dict())
    return result, False


def cached_attribute(ckpt, episode, objective: str, store, *, recompute: bool = False, **params) -> AttributionResult:
    """`attribute(ckpt, episode, objective, **params)` served from the results store when it holds
    the same (checkpoint hash, token ids and roles, objective, method, parameters); computed and
    stored otherwise (`recompute=True` always computes and overwrites). `params` are attribute()'s
    keywords (advantage, ref_model, clip_eps, norms, jvp_method, norms_method, chunk_size,
    model_hash, ref_hash). `store=None` just computes."""
    return cached_with_source(ckpt, episode, objective, store, recompute=recompute, **params)[0]
