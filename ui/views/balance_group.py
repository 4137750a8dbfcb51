"""Gradient balance, view 4: the GRPO group view (ui.views.group_view) for a prompt of your choice:
G fresh rollouts of one problem, each objective's gradient summed over them with each episode's own
advantage."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from ds_core.attribution.reference import reference_for
from ds_core.episodes.tasks import EXAMPLE_PROMPTS, TEST_SET_N, TEST_SET_SIZES, pick_problem
from ui.common import (
    checkpoint_choices,
    get_checkpoint,
    max_tokens_input,
    pick_checkpoint,
    sampling_inputs,
    text_format_inputs,
    user_errors,
)
from ui.services.episodes import with_prompt_settings
from ui.services.explorer import sampling_config
from ui.services.group_view import MAX_GROUP, sample_group
from ui.views import group_view

NO_REF = "none (skip the KL objectives)"
INTRO = (
    "Theorem 3.1 is a statement about the surrogate's gradient **summed over a GRPO group**: on one "
    "episode the surrogate weights every token by the same advantage A, so its sampling:decision split "
    "is exactly SFT's; over a group, episodes of opposite advantage add up and what right and wrong "
    "attempts share can cancel. This view samples G rollouts of one problem, gives each its GRPO "
    "advantage (R − mean)/std, and splits each objective's group gradient into sampling and decision "
    "tokens. A group whose rewards are all equal has A = 0 everywhere: pick a problem the checkpoint "
    "sometimes gets wrong (the default, the shipped sft_reflection on 3x3 problem 0 at seed 0, mixes "
    "right and wrong episodes)."
)


def render() -> None:
    c1, c2, c3, c4 = st.columns([2, 1, 1, 1])
    path = pick_checkpoint("checkpoint", key="grp_ck", default="sft_reflection", container=c1)
    source = c2.radio("problem", ["test set", "typed"], key="grp_source", horizontal=True)
    if source == "test set":
        size = c3.selectbox("test set", TEST_SET_SIZES, index=0, key="grp_size")
        index = int(c4.number_input(f"problem (0..{TEST_SET_N - 1})", 0, TEST_SET_N - 1, 0, 1, key="grp_index"))
        text = ""
    else:
        size, index = "3x3", 0
        text = c3.text_input("problem", "123*456", key="grp_text", help="e.g. " + ", ".join(EXAMPLE_PROMPTS))
        c4.empty()
    s = st.columns(6)
    n = int(s[0].number_input("group size G", 2, MAX_GROUP, 16, 1, key="grp_n"))
    temperature, top_p, attempts, seed = sampling_inputs("grp", s[1:5])
    max_new = max_tokens_input("grp", s[5])
    fmt = text_format_inputs("grp")
    if path is None:
        return
    with user_errors("Cannot set up the group"):
        problem = pick_problem(source, size=size, index=index, text=text, seed=seed)
        cfg = sampling_config(temperature, top_p, attempts, max_new)
        ckpt = with_prompt_settings([get_checkpoint(path)], fmt)[0]
        ref_path, _ = reference_for(ckpt)
        choices = {k: v for k, v in checkpoint_choices().items() if str(v) != str(path)}
        names = list(choices) + [NO_REF]
        default = next((k for k, v in choices.items() if ref_path and str(v) == ref_path), NO_REF)
        ref_label = st.selectbox(
            "KL reference",
            names,
            index=names.index(default),
            key=f"grp_ref_{Path(path).name}",
            help="KL k1/k3 against this checkpoint; the default is the checkpoint's parent (its card)",
        )
        ref = get_checkpoint(choices[ref_label]) if ref_label != NO_REF else None
        key = (
            str(path),
            ckpt.hash,
            (problem.a, problem.b, problem.op),
            (temperature, top_p, attempts, max_new),
            seed,
            fmt,
            n,
            ref.hash if ref is not None else None,
        )
        group_view.section(
            key,
            ckpt,
            lambda: sample_group(ckpt, problem, cfg, n, seed),
            ref,
            "all",
            "grp",
            INTRO + f" Problem: **{problem.display}** = {problem.answer}.",
        )
