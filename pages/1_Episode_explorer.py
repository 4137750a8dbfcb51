"""Episode explorer: sample one episode, see every token coloured by role and shaded by how an
objective's gradient is attributed to it, the decision vs sampling split per objective and per
parameter group, what drives each decision token (captum), and what happens with the opposite
verdict.

Pages only draw: sampling, attribution and counterfactuals live in ds_core.explorer.
"""
from __future__ import annotations

import math
import threading
from pathlib import Path

import streamlit as st

from ds_core.explorer import (GROUP_SEED_OFFSET, IG_DELTA_WARN, INPUT_METHODS, OBJECTIVE_LABELS,
                              OBJECTIVE_NAMES, SHADING, SIGNED_VIEWS, VIEWS, attempts_frame, attribute_objectives,
                              comparison_frame, counterfactual, decision_choices, decision_input_attribution,
                              episode_frame, episode_summary, figures_frame, group_advantage, groups_frame,
                              has_decision_tokens, input_frames, reference_for, run_episode,
                              sampling_config, sampling_key, shading_scale, skipped_lines, token_table,
                              view_frame, warm_up)
from ds_core.store import StoreError
from ds_core.tasks import EXAMPLE_PROMPTS, PROBLEM_SOURCES, TEST_SET_N, TEST_SET_SIZES, Problem, pick_problem
from ui.charts.explorer import (HEATMAP_METRICS, decision_sampling_figure, groups_heatmap, segment_figure,
                                token_figure)
from ui.common import (chart, checkpoint_choices, get_checkpoint, pick_checkpoint, results_store, table,
                       user_errors)
from ui.tokens import legend_html, token_html

st.set_page_config(page_title="Episode explorer · DS-Lens", layout="wide")

REQ = "ex_request"        # session state: the last "Run episode" request
CF_REQ = "ex_cf_request"  # session state: (request, decision index) of the last counterfactual
NO_REF = "none (skip the KL objectives)"
HOVER = ["term", "share", "align_D", "align_S", "grad_norm"]


# ------------------------------------------------------------------------------- cached work
# Keys are plain values: checkpoint path + content hash, the problem, the settings and the seed.
def _problem(p: tuple) -> Problem:
    return Problem(p[0], p[1], p[2])


def _ckpt(path: str, digest: str):
    return get_checkpoint(path)


@st.cache_data(show_spinner=False, max_entries=64)
def _episode(path: str, digest: str, problem: tuple, cfg: tuple, seed: int):
    return run_episode(_ckpt(path, digest), _problem(problem), sampling_config(*cfg), seed)


@st.cache_data(show_spinner=False, max_entries=64)
def _advantage(path: str, digest: str, problem: tuple, cfg: tuple, seed: int, n: int) -> float:
    ep = _episode(path, digest, problem, cfg, seed)
    return group_advantage(_ckpt(path, digest), ep, sampling_config(*cfg), n, seed)


def _store():
    try:
        return results_store()
    except StoreError:
        return None   # attribution still works, just without the persistent cache


@st.cache_data(show_spinner=False, max_entries=128)
def _attributions(path: str, digest: str, problem: tuple, cfg: tuple, seed: int, objectives: tuple,
                  advantage: float | None, ref_path: str | None, ref_digest: str | None, norms: bool):
    ep = _episode(path, digest, problem, cfg, seed)
    ref = get_checkpoint(ref_path) if ref_path else None
    return attribute_objectives(_ckpt(path, digest), ep, objectives, advantage=advantage, ref=ref,
                                store=_store(), norms_for=objectives if norms else ())


@st.cache_data(show_spinner=False, max_entries=128)
def _input_attribution(path: str, digest: str, problem: tuple, cfg: tuple, seed: int, position: int,
                       method: str, target: str, n_steps: int):
    ep = _episode(path, digest, problem, cfg, seed)
    return decision_input_attribution(_ckpt(path, digest), ep, position, method, target, n_steps)


@st.cache_data(show_spinner=False, max_entries=64)
def _counterfactual(path: str, digest: str, problem: tuple, cfg: tuple, seed: int, decision_index: int):
    ep = _episode(path, digest, problem, cfg, seed)
    return counterfactual(_ckpt(path, digest), ep, decision_index, sampling_config(*cfg), seed)


@st.cache_resource(show_spinner=False)
def _warm_up_started() -> bool:
    """Once per server process: import the model code in the background while the user picks."""
    threading.Thread(target=warm_up, name="ds-lens-explorer-warm-up", daemon=True).start()
    return True


def _fmt(v) -> str:
    if isinstance(v, float):
        return "n/a" if math.isnan(v) else f"{v:.4g}"
    return str(v)


# ------------------------------------------------------------------------------- controls
st.title("Episode explorer")
st.markdown(
    "Sample **one episode** and look inside it. Every token is coloured by its role (prompt, "
    "**sampling** = the attempt's worked steps, answer and check, **decision** = `[STOP]` / "
    "`[RESAMPLE]`) and shaded by how the chosen objective's gradient is attributed to it: its "
    "*share* s_t = <∇l_t, G>/|G|² (shares sum to 1), its gradient norm |∇l_t|, or its alignment "
    "with the decision gradient G_D or the sampling gradient G_S. Hover a token for its numbers. "
    "The paper's Gradient Attribution Property predicts |G_S|/|G_D| of the order of the length "
    "ratio for SFT and the KL terms, and a balanced split (same advantage on every token) for the "
    "surrogate.")

c1, c2, c3 = st.columns([2, 2, 3])
ckpt_path = pick_checkpoint("Checkpoint", key="ex_ckpt", default="rl", container=c1)
source = c2.radio("Problem", PROBLEM_SOURCES, horizontal=True, key="ex_source",
                  help="a fixed test-set problem, one you type, or a random problem of a size")
size, index, text, rsize = "3x4", 0, "", "3x4"
if source == "test set":
    cc1, cc2 = c3.columns(2)
    size = cc1.selectbox("Test set", TEST_SET_SIZES, index=1, key="ex_size",
                         help="3x3 and 3x4 are in the training distribution; 3x5..3x9 are not")
    index = int(cc2.number_input(f"Problem (0..{TEST_SET_N - 1})", 0, TEST_SET_N - 1, 0, 1, key="ex_index"))
elif source == "typed":
    text = c3.text_input("Problem", value="123*4567", key="ex_text",
                         help="accepted forms: " + ", ".join(EXAMPLE_PROMPTS) + "; 1..12 digits per operand")
else:
    rsize = c3.text_input("Size (drawn with the seed below)", value="3x5", key="ex_rsize",
                          help="like 3x5 (multiplication) or 3+4 (addition); 1..12 digits per operand")

s1, s2, s3, s4 = st.columns(4)
temperature = s1.number_input("Temperature", 0.0, 5.0, 1.0, 0.1, key="ex_temp",
                              help="1.0 as in the paper; 0 = greedy")
top_p = s2.number_input("Top-p", 0.05, 1.0, 1.0, 0.05, key="ex_top_p")
max_attempts = int(s3.number_input("Max attempts", 1, 8, 4, 1, key="ex_attempts",
                                   help="retry cap: [RESAMPLE] after this many attempts ends the episode"))
seed = int(s4.number_input("Seed", 0, 2 ** 31 - 1, 0, 1, key="ex_seed"))

controls = None
with user_errors("Cannot read the problem"):
    if ckpt_path is not None:
        problem = pick_problem(source, size=size if source == "test set" else rsize, index=index,
                                  text=text, seed=seed)
        controls = {"path": ckpt_path, "problem": (problem.a, problem.b, problem.op),
                    "cfg": sampling_key(temperature, top_p, max_attempts), "seed": seed}

if st.button("Run episode", key="ex_run", type="primary", disabled=controls is None):
    with user_errors("Cannot load the checkpoint"):
        get_checkpoint(controls["path"])
        st.session_state[REQ] = controls

req = st.session_state.get(REQ)
if req is None:
    _warm_up_started()
    st.info("Pick a checkpoint, a problem and sampling settings, then press **Run episode**.")
    st.stop()
if controls is not None and controls != req:
    st.caption("The controls changed since the last run: press **Run episode** to sample with them. "
               "Showing the last episode.")

# ------------------------------------------------------------------------------- the episode
ep = ckpt = None
with user_errors("Cannot run the episode"):
    ckpt = get_checkpoint(req["path"])
    key = (req["path"], ckpt.hash, req["problem"], req["cfg"], req["seed"])
    with st.spinner("Sampling the episode…"):
        ep = _episode(*key)
if ep is None:
    st.stop()

summ = episode_summary(ep)
st.subheader(f"{summ['problem']} = {summ['answer']}  ·  {ckpt.name}")
m1, m2, m3, m4, m5 = st.columns(5)
m1.metric("Final answer", _fmt(summ["final answer"]))
m2.metric("Correct", "yes" if summ["correct"] else "no")
m3.metric("Attempts", summ["attempts"])
m4.metric("Resamples", sum(d.verdict == "RESAMPLE" for d in ep.decisions))
m5.metric("Generated tokens", summ["tokens"])
st.caption(f"Verdicts: {' → '.join(d.verdict for d in ep.decisions) or '(none)'}")
if ep.flags:
    st.warning(f"Flags: {summ['flags']} (README, 'Parsing').")
with st.expander("Attempts", expanded=False):
    table(attempts_frame(ep), "attempts", key="ex_dl_attempts")

# ------------------------------------------------------------------------------- attribution settings
st.subheader("Gradient attribution")
a1, a2, a3, a4 = st.columns([2, 3, 3, 3])
objective = a1.selectbox("Objective", OBJECTIVE_NAMES, index=OBJECTIVE_NAMES.index("kl_k3"),
                         format_func=lambda o: OBJECTIVE_LABELS[o], key="ex_objective",
                         help="the objective whose gradient shades the tokens (KL k3 is the KL loss "
                              "the RL checkpoint was trained with)")
shading = a1.radio("Full colour at", list(SHADING), index=1, key="ex_shading",
                   help="the |value| shaded at full strength: the episode's largest, or its 95th "
                        "percentile (one dominant token then does not wash out the others)")
view = a2.radio("View", list(VIEWS), horizontal=True, key="ex_view",
                help="share <∇l_t, G>/|G|²; norm |∇l_t| (computed on demand, ~2 s); alignment "
                     "<∇l_t, G_D>/|G_D| or <∇l_t, G_S>/|G_S|")
adv_src = a3.radio("Surrogate advantage", ("GRPO group", "my value"), horizontal=True, key="ex_adv_src",
                   help="GRPO: the episode among n fresh rollouts of its problem (same settings), "
                        "A = (R - mean)/std; or a value of your own")
if adv_src == "GRPO group":
    group_n = int(a3.number_input("Group size n (fresh rollouts)", 1, 64, 8, 1, key="ex_group_n"))
else:
    adv_value = float(a3.number_input("Advantage A", -100.0, 100.0, 1.0, 0.5, key="ex_adv_value"))

ref_path, ref_note = reference_for(ckpt)
choices = {label: p for label, p in checkpoint_choices().items()
           if p != req["path"] and str(p) != str(ckpt.path)}
ref_options = list(choices) + [NO_REF]
default_ref = NO_REF
for label, p in choices.items():
    if ref_path and str(p) == ref_path:
        default_ref = label
# one widget per checkpoint, so the default (its parent) follows the checkpoint
ref_label = a4.selectbox("KL reference", ref_options, index=ref_options.index(default_ref),
                         key=f"ex_ref_{Path(req['path']).name}",
                         help="KL k1/k3 are measured against this checkpoint; the default is the "
                              "checkpoint's parent (its card)")
if ref_path is None:
    a4.caption(f"No default: {ref_note}. Pick a reference to see the KL objectives.")

advantage = None
with user_errors("Cannot compute the GRPO advantage"):
    if adv_src == "GRPO group":
        with st.spinner(f"Sampling a GRPO group of {group_n}…"):
            advantage = _advantage(*key, group_n)
        a3.caption(f"A = {advantage:+.4g} (group of {group_n} + this episode, "
                   f"seed {GROUP_SEED_OFFSET}+{req['seed']})")
        if advantage == 0:
            a3.warning("Every reward in the group is equal, so A = 0 and the surrogate's gradient "
                       "vanishes. Choose 'my value' to see its split.")
    else:
        advantage = adv_value

ref_ckpt_path = ref_digest = None
with user_errors("Cannot load the KL reference"):
    if ref_label != NO_REF:
        ref = get_checkpoint(choices[ref_label])
        ref_ckpt_path, ref_digest = choices[ref_label], ref.hash

atts = None
with user_errors("Cannot attribute the episode"):
    with st.spinner("Attributing the gradient of each objective…"):
        atts = _attributions(*key, OBJECTIVE_NAMES, advantage, ref_ckpt_path, ref_digest, False)
        shown = atts
        if view == "norm" and objective in atts.results:
            shown = _attributions(*key, (objective,), advantage, ref_ckpt_path, ref_digest, True)

decisions = decision_choices(ep)
picked = None
if decisions:
    picked = st.session_state.get("ex_decision")
    if picked not in [p for p, _ in decisions]:
        picked = decisions[0][0]

if atts is not None:
    if atts.skipped:
        st.caption("Not attributed — " + " · ".join(skipped_lines(atts)))
    if not decisions:
        st.warning("This episode has no decision token (it never reached a verdict): there is no "
                   "decision vs sampling split to measure.")
    left, right = st.columns([3, 2])
    with left:
        if objective in shown.results:
            vf = view_frame(ep, shown, objective, view)
            st.markdown(f"**{OBJECTIVE_LABELS[objective]}**, shaded by **{view}**")
            st.html(legend_html(f"full colour at the {shading} of |{view}|"
                                + ("; larger values saturate" if SHADING[shading] is not None else "")))
            st.html(token_html(vf, "value", HOVER, signed=SIGNED_VIEWS[view], highlight=picked,
                               scale=shading_scale(vf["value"], shading)))
            chart(token_figure(vf, "value", f"{OBJECTIVE_LABELS[objective]}: {view} per token"),
                  f"tokens {objective} {view}", key="ex_chart_tokens")
        else:
            st.info(f"{OBJECTIVE_LABELS[objective]} is not attributed on this episode "
                    f"({atts.skipped.get(objective, 'not computed')}); tokens are coloured by role only.")
            st.html(legend_html())
            st.html(token_html(view_frame(ep, atts, objective, view), None, highlight=picked))
    with right:
        figs = figures_frame(atts)
        chart(decision_sampling_figure(figs), "decision vs sampling", key="ex_chart_figures")
        table(figs, "decision vs sampling figures", key="ex_dl_figures")

    st.subheader("Per parameter group")
    metric = st.selectbox("Metric", list(HEATMAP_METRICS), format_func=lambda m: HEATMAP_METRICS[m][0],
                          key="ex_group_metric")
    groups = groups_frame(atts)
    chart(groups_heatmap(groups, metric), f"parameter groups {metric}", key="ex_chart_groups")
    with st.expander("Parameter-group table (all objectives)"):
        table(groups, "parameter groups", key="ex_dl_groups")

    with st.expander("Episode table: every token with its role, segment and per-objective numbers"):
        tt = token_table(ep, atts)
        if shown is not atts and objective in shown.results:
            tt[f"grad_norm[{objective}]"] = shown.results[objective].grad_norm
        table(tt, "episode tokens", key="ex_dl_tokens")

# ------------------------------------------------------------------------------- decisions
st.subheader("Decision tokens")
if not decisions:
    st.info("No decision token in this episode: nothing to attribute or to flip.")
    st.stop()
labels = dict(decisions)
d1, d2, d3, d4 = st.columns([3, 3, 2, 2])
position = d1.selectbox("Decision token", [p for p, _ in decisions],
                        format_func=lambda p: labels.get(p, str(p)), key="ex_decision")
method_label = d2.radio("Method", list(INPUT_METHODS), horizontal=True, key="ex_ia_method")
has_dec = has_decision_tokens(ckpt)
targets = ["contrastive", "logprob"] if has_dec else ["logprob"]
target = d3.radio("Target", targets, key="ex_ia_target",
                  format_func={"contrastive": "log p(STOP) − log p(RESAMPLE)",
                               "logprob": "log p(written token)"}.get)
n_steps = int(d4.number_input("IG steps", 4, 256, 64, 4, key="ex_ia_steps",
                              disabled=INPUT_METHODS[method_label] != "ig"))
decision_index = next(i for i, d in enumerate(ep.decisions) if d.start <= position < d.end)

with user_errors("Cannot attribute the decision token"):
    with st.spinner("Input attribution (captum)…"):
        ia = _input_attribution(*key, position, INPUT_METHODS[method_label], target, n_steps)
    tokens, segments = input_frames(ia, position)
    val = float(ia.target_values[0])
    cap = f"target value at token {position}: {val:+.4g}"
    if target == "contrastive":
        p_stop = 1 / (1 + math.exp(-val)) if abs(val) < 700 else float(val > 0)
        cap += f" (P(STOP | STOP or RESAMPLE) = {p_stop:.3f})"
    if ia.deltas is not None:
        cap += (f"; IG convergence delta {float(ia.deltas[0]):+.3g} "
                f"(relative {float(ia.relative_deltas[0]):.2g})")
    st.caption(cap)
    if ia.deltas is not None and float(ia.relative_deltas[0]) > IG_DELTA_WARN:
        st.warning(f"Integrated gradients has not converged: the attributions miss f(input) − "
                   f"f(baseline) by {float(ia.relative_deltas[0]):.0%} of it. Try more (or fewer) "
                   "steps; on these small RMSNorm models the error moves erratically with the steps.")
    i1, i2 = st.columns([3, 2])
    with i1:
        st.html(token_html(tokens, "attribution", ["attribution", "segment"],
                           signed=ia.params.get("aggregate") != "l2", highlight=position,
                           scale=shading_scale(tokens["attribution"], shading)))
    with i2:
        chart(segment_figure(segments, f"{method_label}: attribution per segment"),
              f"input attribution {method_label}", key="ex_chart_segments")
    table(segments, "input attribution per segment", key="ex_dl_segments")
    with st.expander("Input attribution per token"):
        table(tokens[tokens["pos"] < position], "input attribution per token", key="ex_dl_ia_tokens")

st.markdown("**Counterfactual**: keep the transcript up to this decision, write the opposite verdict "
            "there and let the model continue (same sampling settings and seed).")
if st.button("Force the opposite verdict", key="ex_cf", disabled=not has_dec,
             help=None if has_dec else "this checkpoint has no [STOP]/[RESAMPLE] tokens"):
    st.session_state[CF_REQ] = (req, decision_index)
if st.session_state.get(CF_REQ) == (req, decision_index):
    with user_errors("Cannot roll the counterfactual"):
        with st.spinner("Rolling the episode on…"):
            cf = _counterfactual(*key, decision_index)
        st.caption(cf.note)
        o1, o2 = st.columns(2)
        with o1:
            st.markdown(f"**Original** ({cf.original} at token {cf.position})")
            st.html(token_html(episode_frame(ep), None, highlight=cf.position))
        with o2:
            st.markdown(f"**Counterfactual** ({cf.forced} forced at token {cf.position})")
            st.html(token_html(episode_frame(cf.episode), None, highlight=cf.position))
        table(comparison_frame(ep, cf), "counterfactual comparison", key="ex_dl_cf")
