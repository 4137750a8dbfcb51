"""The Episode explorer's decision section: what drives a decision token (captum input
attribution) and what happens with the opposite verdict (a counterfactual rollout)."""

from __future__ import annotations

import math

import streamlit as st

from ds_core.episodes.forcing import REVISION_SENTENCE
from ui.charts.explorer import segment_figure
from ui.common import chart, table, user_errors
from ui.services.explorer import (
    IG_DELTA_WARN,
    INPUT_METHODS,
    comparison_frame,
    episode_frame,
    has_decision_tokens,
    input_frames,
    shading_scale,
)
from ui.services.timings import per_unit, record
from ui.tokens import token_html
from ui.views.explorer_work import (
    cached_continuations,
    cached_counterfactual,
    cached_decision_values,
    cached_input_attribution,
)

CF_REQ = "ex_cf_request"  # session state: (request, decision index) of the last counterfactual
Q_REQ = "ex_q_request"  # session state: (request, N) of the last Q-value estimate


def ig_step_text(digest: str) -> str:
    per = per_unit("ig step", digest)
    if per is None:
        return "no IG run of this checkpoint has been timed on this machine yet"
    return f"measured on this machine: {per:.2g} s per step"


def render(ep, ckpt, decisions, key: tuple, req: dict, shading: str) -> None:
    """`decisions`: (position, label) of every decision token; `key`: the episode's cache key."""
    st.subheader("Decision tokens")
    if not decisions:
        st.info("No decision token in this episode: nothing to attribute or to flip.")
        return
    labels = dict(decisions)
    d1, d2, d3, d4 = st.columns([3, 3, 2, 2])
    position = d1.selectbox(
        "Decision token", [p for p, _ in decisions], format_func=lambda p: labels.get(p, str(p)), key="ex_decision"
    )
    method_label = d2.radio("Method", list(INPUT_METHODS), horizontal=True, key="ex_ia_method")
    has_dec = has_decision_tokens(ckpt)
    targets = ["contrastive", "logprob"] if has_dec else ["logprob"]
    target = d3.radio(
        "Target",
        targets,
        key="ex_ia_target",
        format_func={"contrastive": "log p(STOP) − log p(RESAMPLE)", "logprob": "log p(written token)"}.get,
    )
    n_steps = int(
        d4.number_input(
            "IG steps",
            4,
            256,
            64,
            4,
            key="ex_ia_steps",
            disabled=INPUT_METHODS[method_label] != "ig",
            help="each step costs about one forward+backward pass (input x gradient and saliency: one pass); "
            + ig_step_text(ckpt.hash),
        )
    )
    decision_index = next(i for i, d in enumerate(ep.decisions) if d.start <= position < d.end)

    with user_errors("Cannot attribute the decision token"):
        with st.spinner("Input attribution (captum)…"):
            ia = cached_input_attribution(*key, position, INPUT_METHODS[method_label], target, n_steps)
        tokens, segments = input_frames(ia, position)
        val = float(ia.target_values[0])
        cap = f"target value at token {position}: {val:+.4g}"
        if "total_s" in ia.timing:
            cap = f"computed in {float(ia.timing['total_s']):.1f} s; " + cap
            seen = st.session_state.setdefault("ex_ig_timed", set())
            stamp = (ckpt.hash, position, n_steps, float(ia.timing["total_s"]))
            if INPUT_METHODS[method_label] == "ig" and stamp not in seen:  # once per run, not per rerun
                seen.add(stamp)
                record("ig step", ckpt.hash, float(ia.timing["total_s"]), n_steps)
        if target == "contrastive":
            p_stop = 1 / (1 + math.exp(-val)) if abs(val) < 700 else float(val > 0)
            cap += f" (P(STOP | STOP or RESAMPLE) = {p_stop:.3f})"
        if ia.deltas is not None:
            cap += f"; IG convergence delta {float(ia.deltas[0]):+.3g} (relative {float(ia.relative_deltas[0]):.2g})"
        st.caption(cap)
        if ia.deltas is not None and float(ia.relative_deltas[0]) > IG_DELTA_WARN:
            st.warning(
                f"Integrated gradients has not converged: the attributions miss f(input) − "
                f"f(baseline) by {float(ia.relative_deltas[0]):.0%} of it. Try more (or fewer) "
                "steps; on these small RMSNorm models the error moves erratically with the steps."
            )
        i1, i2 = st.columns([3, 2])
        with i1:
            st.html(
                token_html(
                    tokens,
                    "attribution",
                    ["attribution", "segment"],
                    signed=ia.params.get("aggregate") != "l2",
                    highlight=position,
                    scale=shading_scale(tokens["attribution"], shading),
                )
            )
        with i2:
            chart(
                segment_figure(segments, f"{method_label}: attribution per segment"),
                f"input attribution {method_label}",
                key="ex_chart_segments",
            )
        table(segments, "input attribution per segment", key="ex_dl_segments")
        with st.expander("Input attribution per token"):
            table(tokens[tokens["pos"] < position], "input attribution per token", key="ex_dl_ia_tokens")

    verdict = ep.decisions[decision_index].verdict
    if has_dec:
        what, label = "write the opposite verdict token there", "Force the opposite verdict"
    elif verdict == "STOP":
        what = f"write a revision sentence ({REVISION_SENTENCE!r}) where it stopped"
        label = "Force a revision"
    else:
        what, label = "end the turn where it began to revise", "Force a stop"
    st.markdown(
        f"**Counterfactual**: keep the transcript up to this decision, {what} and let the model "
        "continue (same sampling settings and seed)."
    )
    if st.button(label, key="ex_cf"):
        st.session_state[CF_REQ] = (req, decision_index)
    if st.session_state.get(CF_REQ) == (req, decision_index):
        with user_errors("Cannot roll the counterfactual"):
            with st.spinner("Rolling the episode on…"):
                cf = cached_counterfactual(*key, decision_index)
            st.caption(cf.note)
            o1, o2 = st.columns(2)
            with o1:
                st.markdown(f"**Original** ({cf.original} at token {cf.position})")
                st.html(token_html(episode_frame(ep), None, highlight=cf.position))
            with o2:
                st.markdown(f"**Counterfactual** ({cf.forced} forced at token {cf.position})")
                st.html(token_html(episode_frame(cf.episode), None, highlight=cf.position))
            table(comparison_frame(ep, cf), "counterfactual comparison", key="ex_dl_cf")
    values_section(ep, key, req, has_dec)


def values_section(ep, key: tuple, req: dict, has_dec: bool = True) -> None:
    """Q(STOP) and Q(RESAMPLE) at every verdict of the episode, from N continuations each."""
    revision = (
        "written from [RESAMPLE] at that point"
        if has_dec
        else f"written after a revision sentence ({REVISION_SENTENCE!r}) put at that point"
    )
    st.markdown(
        "**What each verdict is worth**: Q(STOP) = this attempt is correct (stopping keeps it); "
        f"Q(RESAMPLE) = the share of N continuations, {revision} with the same "
        "settings, that end correct (Wilson 95%). At the retry cap a revision ends the episode with the "
        "same answer, so the two are equal there."
        + (
            ""
            if has_dec
            else " This model's verdicts are sentences, not tokens: its p(STOP) is not one token's "
            "probability and is left blank."
        )
    )
    c1, c2 = st.columns([1, 3])
    n = int(c1.number_input("Continuations N", 1, 256, 32, 1, key="ex_q_n"))
    if c2.button("Estimate Q-values", key="ex_q_go"):
        st.session_state[Q_REQ] = (req, n)
    if st.session_state.get(Q_REQ) != (req, n):
        return
    with user_errors("Cannot estimate the Q-values"):
        with st.spinner(f"Rolling {n} continuations from each verdict…"):
            vals = cached_decision_values(*key, n)
        table(vals.drop(columns=["episode"]), "verdict values", key="ex_dl_q")
        for r in vals.itertuples():
            if r.at_cap:
                st.caption(f"After attempt {r.attempt}: the retry cap, so the verdict cannot change the answer.")
                continue
            chosen = "kept" if r.chosen == "STOP" else "revised"
            st.caption(
                f"After attempt {r.attempt} ({'correct' if r.attempt_correct else 'wrong'}, {chosen}): "
                f"Q(STOP) = {r.q_stop:.0f}, Q(RESAMPLE) = {r.q_resample:.2f} ({r.k}/{r.n}, "
                f"{r.q_resample_lo:.2f}–{r.q_resample_hi:.2f}); optimal: {r.optimal}; "
                + ("" if math.isnan(r.p_optimal) else f"the model gives it p = {r.p_optimal:.3f}; ")
                + f"the chosen verdict's advantage {r.advantage_chosen:+.2f}."
            )
        rolled = [int(a) for a, cap in zip(vals["attempt"], vals["at_cap"]) if not cap]
        if rolled:
            c1, c2 = st.columns(2)
            attempt = c1.selectbox("Continuations behind Q(RESAMPLE) after attempt", rolled, key="ex_q_attempt")
            j = int(c2.number_input(f"Continuation (1..{n})", 1, n, 1, 1, key="ex_q_j"))
            conts = cached_continuations(*key, n, attempt)
            c = conts[j - 1]
            verdicts = ", ".join(d.verdict for d in c.decisions) or "(none)"
            st.caption(
                f"Continuation {j} of {n} after attempt {attempt}: final answer {c.final_answer}, "
                f"{'correct' if c.correct else 'wrong'}; verdicts {verdicts}."
            )
            st.html(token_html(episode_frame(c), None, highlight=ep.decisions[attempt - 1].start))
