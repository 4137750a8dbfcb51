"""The Compare page's cached work: every model call, keyed by checkpoint path + content hash, the
problem, the settings and the seed, so Streamlit can cache it (the page only draws)."""

from __future__ import annotations

import streamlit as st

from ds_core.episodes.tasks import Problem
from ds_core.models.sampling import SamplingConfig
from ui.common import get_checkpoint, results_store
from ui.services.compare import sample_episode, vocab_problem
from ui.services.compare_attribution import attribute_one
from ui.services.compare_teacher_forcing import score
from ui.services.episodes import with_prompt_settings


@st.cache_data(show_spinner=False, max_entries=256)
def cached_episode(path: str, digest: str, problem: tuple, cfg: tuple, seed: int, fmt: tuple = ()):
    (ck,) = with_prompt_settings([get_checkpoint(path)], fmt)
    return sample_episode(ck, Problem(*problem), SamplingConfig(*cfg), seed)


@st.cache_data(show_spinner=False, max_entries=64)
def cached_vocab_problem(labels: tuple, paths: tuple, digests: tuple) -> str | None:
    return vocab_problem({lab: get_checkpoint(p) for lab, p in zip(labels, paths)})


@st.cache_data(show_spinner=False, max_entries=256)
def cached_scores(path: str, digest: str, transcripts: tuple):
    return score(get_checkpoint(path), transcripts)


@st.cache_data(show_spinner=False, max_entries=256)
def cached_attribution(
    path: str,
    digest: str,
    src: tuple,
    objective: str,
    advantage: float | None,
    ref_path: str | None,
    ref_digest: str | None,
):
    """(AttributionResult, None) or (None, the reason it cannot be computed); the results store
    caches the result across sessions too."""
    return attribute_one(
        get_checkpoint(path),
        cached_episode(*src),
        objective,
        results_store(),
        advantage=advantage,
        ref=get_checkpoint(ref_path) if ref_path else None,
    )
