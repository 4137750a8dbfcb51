"""The Episode explorer's cached work: every model call of the page, keyed by plain values
(checkpoint path + content hash, the problem, the settings, the seed) so Streamlit can cache it."""

from __future__ import annotations

import math
import threading

import streamlit as st

from ds_core.episodes.tasks import Problem
from ds_core.episodes.text_format import with_text_settings
from ds_core.store import StoreError
from ui.common import get_checkpoint, results_store
from ui.services.explorer import (
    attribute_objectives,
    counterfactual,
    decision_input_attribution,
    group_advantage,
    run_episode,
    sampling_config,
    warm_up,
)


def problem_of(p: tuple) -> Problem:
    return Problem(p[0], p[1], p[2])


def checkpoint_of(path: str, digest: str, fmt: tuple = ()):
    """The cached checkpoint, with the page's text-format settings (name, value pairs) applied."""
    ck = get_checkpoint(path)
    if not fmt:
        return ck
    return with_text_settings(ck, **dict(fmt))


@st.cache_data(show_spinner=False, max_entries=64)
def cached_episode(path: str, digest: str, problem: tuple, cfg: tuple, seed: int, fmt: tuple):
    return run_episode(checkpoint_of(path, digest, fmt), problem_of(problem), sampling_config(*cfg), seed)


@st.cache_data(show_spinner=False, max_entries=64)
def cached_advantage(path: str, digest: str, problem: tuple, cfg: tuple, seed: int, fmt: tuple, n: int) -> float:
    ep = cached_episode(path, digest, problem, cfg, seed, fmt)
    return group_advantage(checkpoint_of(path, digest, fmt), ep, sampling_config(*cfg), n, seed)


def store_or_none():
    try:
        return results_store()
    except StoreError:
        return None  # attribution still works, just without the persistent cache


@st.cache_data(show_spinner=False, max_entries=128)
def cached_attributions(
    path: str,
    digest: str,
    problem: tuple,
    cfg: tuple,
    seed: int,
    fmt: tuple,
    objectives: tuple,
    advantage: float | None,
    ref_path: str | None,
    ref_digest: str | None,
    norms: bool,
    parameters: str = "all",
):
    ep = cached_episode(path, digest, problem, cfg, seed, fmt)
    ref = get_checkpoint(ref_path) if ref_path else None
    return attribute_objectives(
        checkpoint_of(path, digest, fmt),
        ep,
        objectives,
        advantage=advantage,
        ref=ref,
        store=store_or_none(),
        norms_for=objectives if norms else (),
        parameters=parameters,
    )


@st.cache_data(show_spinner=False, max_entries=128)
def cached_input_attribution(
    path: str,
    digest: str,
    problem: tuple,
    cfg: tuple,
    seed: int,
    fmt: tuple,
    position: int,
    method: str,
    target: str,
    n_steps: int,
):
    ep = cached_episode(path, digest, problem, cfg, seed, fmt)
    return decision_input_attribution(checkpoint_of(path, digest, fmt), ep, position, method, target, n_steps)


@st.cache_data(show_spinner=False, max_entries=64)
def cached_counterfactual(
    path: str, digest: str, problem: tuple, cfg: tuple, seed: int, fmt: tuple, decision_index: int
):
    ep = cached_episode(path, digest, problem, cfg, seed, fmt)
    return counterfactual(checkpoint_of(path, digest, fmt), ep, decision_index, sampling_config(*cfg), seed)


@st.cache_data(show_spinner=False, max_entries=32)
def cached_decision_values(path: str, digest: str, problem: tuple, cfg: tuple, seed: int, fmt: tuple, n: int):
    """Q(STOP), Q(RESAMPLE) at every verdict of the episode (ds_core.analysis.decisions)."""
    from ds_core.analysis.decisions import decision_values

    ep = cached_episode(path, digest, problem, cfg, seed, fmt)
    return decision_values(checkpoint_of(path, digest, fmt), [ep], sampling_config(*cfg), n=n, seed=seed)


@st.cache_data(show_spinner=False, max_entries=32)
def cached_continuations(
    path: str, digest: str, problem: tuple, cfg: tuple, seed: int, fmt: tuple, n: int, attempt: int
):
    """The continuations behind Q(RESAMPLE) after `attempt`: the very ones cached_decision_values counted."""
    from ds_core.analysis.decisions import continuations

    ep = cached_episode(path, digest, problem, cfg, seed, fmt)
    return continuations(checkpoint_of(path, digest, fmt), ep, attempt, sampling_config(*cfg), n=n, seed=seed)


@st.cache_resource(show_spinner=False)
def warm_up_started() -> bool:
    """Once per server process: import the model code in the background while the user picks."""
    threading.Thread(target=warm_up, name="ds-lens-explorer-warm-up", daemon=True).start()
    return True


def fmt_value(v) -> str:
    if isinstance(v, float):
        return "n/a" if math.isnan(v) else f"{v:.4g}"
    return str(v)
