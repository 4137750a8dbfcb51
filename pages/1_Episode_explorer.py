"""Episode explorer: sample one episode, see every token coloured by role and shaded by how an
objective's gradient is attributed to it, the decision vs sampling split per objective and per
parameter group, what drives each decision token (captum), and what happens with the opposite
verdict.

Pages only draw: sampling, attribution and counterfactuals live in ui.services.explorer.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from ds_core.attribution.reference import reference_for
from ds_core.attribution.selection import SPEC_HELP
from ds_core.episodes.tasks import EXAMPLE_PROMPTS, PROBLEM_SOURCES, TEST_SET_N, TEST_SET_SIZES, pick_problem
from ui.charts.explorer import HEATMAP_METRICS, decision_sampling_figure, groups_heatmap, token_figure
from ui.common import (
    DS_FORMAT_NOTE,
    chart,
    checkpoint_choices,
    get_checkpoint,
    max_tokens_input,
    pick_checkpoint,
    sampling_inputs,
    table,
    text_format_inputs,
    user_errors,
)
from ui.services.episodes import verdicts_text
from ui.services.explorer import (
    GROUP_SEED_OFFSET,
    OBJECTIVE_LABELS,
    OBJECTIVE_NAMES,
    SHADING,
    SIGNED_VIEWS,
    VIEWS,
    attempts_frame,
    decision_choices,
    default_objective,
    episode_summary,
    figures_frame,
    groups_frame,
    has_decision_tokens,
    huge_ratio_notes,
    parameter_scope,
    sampling_config,
    sampling_key,
    segmentation_frame,
    shading_scale,
    skipped_lines,
    token_table,
    view_frame,
)
from ui.services.group_view import sample_group
from ui.tokens import legend_html, token_html
from ui.views import explorer_decisions, group_view
from ui.views.explorer_work import (
    cached_advantage,
    cached_attributions,
    cached_episode,
    checkpoint_of,
    fmt_value,
    problem_of,
    warm_up_started,
)

st.set_page_config(page_title="Episode explorer · DS-Lens", layout="wide")

REQ = "ex_request"  # session state: the last "Run episode" request

NO_REF = "none (skip the KL objectives)"
HOVER = ["term", "share", "align_D", "align_S", "grad_norm"]


# ------------------------------------------------------------------------------- controls
st.title("Episode explorer")
st.markdown(
    "Sample **one episode** and look inside it. Every token is coloured by its role (prompt, "
    "**sampling** = the attempt's worked steps, answer and check, **decision** = `[STOP]` / "
    "`[RESAMPLE]`) and shaded by how the chosen objective's gradient is attributed to it: its "
    "*share* s_t = <∇l_t, G>/|G|² (shares sum to 1), its gradient norm |∇l_t|, or its alignment "
    "with the decision gradient G_D or the sampling gradient G_S. Hover a token for its numbers. "
    "The paper's Gradient Attribution Property: SFT and the KL terms weight every token the same, "
    "so the many sampling tokens outweigh the few decision tokens; the GRPO surrogate weights every "
    "token of an episode by that episode's advantage A. On **one** episode that makes the surrogate's "
    "split exactly SFT's (its gradient is −A × SFT's); the balance Theorem 3.1 speaks of is a property "
    "of the sum over a GRPO group, with advantages of both signs: see **The GRPO group** below."
)

c1, c2, c3 = st.columns([2, 2, 3])
ckpt_path = pick_checkpoint("Checkpoint", key="ex_ckpt", default="rl", container=c1)
source = c2.radio(
    "Problem from",
    PROBLEM_SOURCES,
    horizontal=True,
    key="ex_source",
    help="a fixed test-set problem, one you type, or a random problem of a size",
)
size, index, text, rsize = "3x4", 0, "", "3x4"
if source == "test set":
    cc1, cc2 = c3.columns(2)
    size = cc1.selectbox(
        "Test set",
        TEST_SET_SIZES,
        index=1,
        key="ex_size",
        help="3x3 and 3x4 are in the training distribution; 3x5..3x9 are not",
    )
    index = int(cc2.number_input(f"Problem (0..{TEST_SET_N - 1})", 0, TEST_SET_N - 1, 0, 1, key="ex_index"))
elif source == "typed":
    text = c3.text_input(
        "Problem (typed)",
        value="123*4567",
        key="ex_text",
        help="accepted forms: " + ", ".join(EXAMPLE_PROMPTS) + "; 1..12 digits per operand",
    )
else:
    rsize = c3.text_input(
        "Size (drawn with the seed below)",
        value="3x5",
        key="ex_rsize",
        help="like 3x5 (multiplication) or 3+4 (addition); 1..12 digits per operand",
    )

s1, s2, s3, s4, s5 = st.columns(5)
temperature, top_p, max_attempts, seed = sampling_inputs("ex", (s1, s2, s3, s4))
max_new = max_tokens_input("ex", s5)
fmt = text_format_inputs("ex")

controls = None
with user_errors("Cannot read the problem"):
    if ckpt_path is not None:
        problem = pick_problem(source, size=size if source == "test set" else rsize, index=index, text=text, seed=seed)
        controls = {
            "path": ckpt_path,
            "problem": (problem.a, problem.b, problem.op),
            "cfg": sampling_key(temperature, top_p, max_attempts, max_new),
            "seed": seed,
            "fmt": fmt,
        }

if st.button("Run episode", key="ex_run", type="primary", disabled=controls is None):
    with user_errors("Cannot load the checkpoint"):
        get_checkpoint(controls["path"])
        st.session_state[REQ] = controls

req = st.session_state.get(REQ)
if req is None:
    warm_up_started()
    st.info("Pick a checkpoint, a problem and sampling settings, then press **Run episode**.")
    st.stop()
if controls is not None and controls != req:
    st.caption(
        "The controls changed since the last run: press **Run episode** to sample with them. Showing the last episode."
    )

# ------------------------------------------------------------------------------- the episode
ep = ckpt = None
with user_errors("Cannot run the episode"):
    ckpt = get_checkpoint(req["path"])
    key = (req["path"], ckpt.hash, req["problem"], req["cfg"], req["seed"], req.get("fmt", ()))
    with st.spinner("Sampling the episode…"):
        ep = cached_episode(*key)
if ep is None:
    st.stop()

summ = episode_summary(ep)
st.subheader(f"{summ['problem']} = {summ['answer']}  ·  {ckpt.name}")
m1, m2, m3, m4, m5 = st.columns(5)
m1.metric("Final answer", fmt_value(summ["final answer"]))
m2.metric("Correct", "yes" if summ["correct"] else "no")
m3.metric("Attempts", summ["attempts"])
m4.metric("Resamples", sum(d.verdict == "RESAMPLE" for d in ep.decisions))
m5.metric("Generated tokens", summ["tokens"])
st.caption(f"Verdicts: {verdicts_text(ep)}")
if has_decision_tokens(ckpt):
    st.caption(DS_FORMAT_NOTE)
if ep.flags:
    st.warning(f"Flags: {summ['flags']} (README, 'Parsing').")
text_model = not has_decision_tokens(ckpt)
with st.expander("Segmentation: attempts, decision spans, the answer read from each attempt", expanded=text_model):
    if text_model:
        st.caption(
            "This model writes no [STOP]/[RESAMPLE] tokens: a decision is a sentence holding one of the "
            "resample markers (a revision) or the end of the turn (a stop); an attempt is the text between "
            "decisions, its answer read by the answer readers. A wrong split? Edit the markers or readers "
            "under **Prompt and markers** and press **Run episode**."
        )
    table(segmentation_frame(ep, ckpt.tokenizer), "segmentation", key="ex_dl_segmentation")
    table(attempts_frame(ep), "attempts", key="ex_dl_attempts")

# ------------------------------------------------------------------------------- attribution settings
st.subheader("Gradient attribution")
a1, a2, a3, a4 = st.columns([2, 3, 3, 3])
objective_slot = a1.empty()  # filled once the attributions say which objectives this episode has
shading = a1.radio(
    "Full colour at",
    list(SHADING),
    index=1,
    key="ex_shading",
    help="the |value| shaded at full strength: the episode's largest, or its 95th "
    "percentile (one dominant token then does not wash out the others)",
)
view = a2.radio(
    "View",
    list(VIEWS),
    horizontal=True,
    key="ex_view",
    help="share <∇l_t, G>/|G|²; norm |∇l_t| (computed on demand: one backward pass per token, its time "
    "is shown once computed); alignment "
    "<∇l_t, G_D>/|G_D| or <∇l_t, G_S>/|G_S|",
)
adv_src = a3.radio(
    "Surrogate advantage",
    ("GRPO group", "my value"),
    horizontal=True,
    key="ex_adv_src",
    help="GRPO: the episode among n fresh rollouts of its problem (same settings), "
    "A = (R - mean)/std; or a value of your own",
)
group_n = int(st.session_state.get("ex_group_n", 8))
if adv_src == "GRPO group":
    group_n = int(a3.number_input("Group size n (fresh rollouts)", 1, 64, 8, 1, key="ex_group_n"))
else:
    adv_value = float(a3.number_input("Advantage A", -100.0, 100.0, 1.0, 0.5, key="ex_adv_value"))

ref_path, ref_note = reference_for(ckpt)
choices = {label: p for label, p in checkpoint_choices().items() if p != req["path"] and str(p) != str(ckpt.path)}
ref_options = list(choices) + [NO_REF]
default_ref = NO_REF
for label, p in choices.items():
    if ref_path and str(p) == ref_path:
        default_ref = label
# one widget per checkpoint, so the default (its parent) follows the checkpoint
ref_label = a4.selectbox(
    "KL reference",
    ref_options,
    index=ref_options.index(default_ref),
    key=f"ex_ref_{Path(req['path']).name}",
    help="KL k1/k3 are measured against this checkpoint; the default is the checkpoint's parent (its card)",
)
if ref_path is None:
    a4.caption(f"No default: {ref_note}. Pick a reference to see the KL objectives.")

advantage = None
with user_errors("Cannot compute the GRPO advantage"):
    if adv_src == "GRPO group":
        with st.spinner(f"Sampling a GRPO group of {group_n}…"):
            advantage = cached_advantage(*key, group_n)
        a3.caption(f"A = {advantage:+.4g} (group of {group_n} + this episode, seed {GROUP_SEED_OFFSET}+{req['seed']})")
        if advantage == 0:
            a3.warning(
                "Every reward in the group is equal, so A = 0 and the surrogate's gradient "
                "vanishes. Choose 'my value' to see its split."
            )
    else:
        advantage = adv_value

with st.expander("Parameters the gradient covers", expanded=False):
    spec_text = st.text_input(
        "Parameters",
        value="all",
        key="ex_params",
        help="for models too big to differentiate whole, restrict the attribution to parameter groups "
        "(the rest held fixed): " + SPEC_HELP,
    )
params_spec, params_line = "all", None
with user_errors("Cannot read the parameter spec"):
    params_spec, params_line = parameter_scope(ckpt, spec_text)
if params_line is None:
    st.stop()

ref_ckpt_path = ref_digest = None
with user_errors("Cannot load the KL reference"):
    if ref_label != NO_REF:
        ref = get_checkpoint(choices[ref_label])
        ref_ckpt_path, ref_digest = choices[ref_label], ref.hash

atts = None
objective = "kl_k3"
with user_errors("Cannot attribute the episode"):
    with st.spinner("Attributing the gradient of each objective…"):
        atts = cached_attributions(*key, OBJECTIVE_NAMES, advantage, ref_ckpt_path, ref_digest, False, params_spec)
        # the default is an objective this episode has (KL k3, the RL checkpoint's KL loss, when there
        # is a reference; else the surrogate when A != 0; else SFT): the first view is never empty
        default_obj = default_objective(atts)
        objective = objective_slot.selectbox(
            "Objective",
            OBJECTIVE_NAMES,
            index=OBJECTIVE_NAMES.index(default_obj),
            format_func=lambda o: OBJECTIVE_LABELS[o],
            key=f"ex_objective_{Path(req['path']).name}",
            help="the objective whose gradient shades the tokens (KL k3 is the KL loss the RL checkpoint was "
            "trained with); the default is one this episode can be attributed under",
        )
        shown = atts
        if view == "norm" and objective in atts.results:
            shown = cached_attributions(*key, (objective,), advantage, ref_ckpt_path, ref_digest, True, params_spec)
            norm_s = shown.results[objective].timing.get("norms") if objective in shown.results else None
            if norm_s is not None:
                a2.caption(f"Gradient norms of {OBJECTIVE_LABELS[objective]}: {norm_s:.1f} s on this machine.")

decisions = decision_choices(ep)
picked = None
if decisions:
    picked = st.session_state.get("ex_decision")
    if picked not in [p for p, _ in decisions]:
        picked = decisions[0][0]

if atts is not None:
    st.caption(f"Every figure below covers {params_line}.")
    if atts.skipped:
        st.caption("Not attributed — " + " · ".join(skipped_lines(atts)))
    if not decisions:
        st.warning(
            "This episode has no decision token (it never reached a verdict): there is no "
            "decision vs sampling split to measure."
        )
    left, right = st.columns([3, 2])
    with left:
        if objective in shown.results:
            vf = view_frame(ep, shown, objective, view)
            st.markdown(f"**{OBJECTIVE_LABELS[objective]}**, shaded by **{view}**")
            st.html(
                legend_html(
                    f"full colour at the {shading} of |{view}|"
                    + ("; larger values saturate" if SHADING[shading] is not None else "")
                )
            )
            st.html(
                token_html(
                    vf,
                    "value",
                    HOVER,
                    signed=SIGNED_VIEWS[view],
                    highlight=picked,
                    scale=shading_scale(vf["value"], shading),
                )
            )
            chart(
                token_figure(vf, "value", f"{OBJECTIVE_LABELS[objective]}: {view} per token"),
                f"tokens {objective} {view}",
                key="ex_chart_tokens",
            )
        else:
            st.info(
                f"{OBJECTIVE_LABELS[objective]} is not attributed on this episode "
                f"({atts.skipped.get(objective, 'not computed')}); tokens are coloured by role only."
            )
            st.html(legend_html())
            st.html(token_html(view_frame(ep, atts, objective, view), None, highlight=picked))
    with right:
        figs = figures_frame(atts)
        chart(decision_sampling_figure(figs), "decision vs sampling", key="ex_chart_figures")
        table(figs, "decision vs sampling figures", key="ex_dl_figures")
        for note in huge_ratio_notes(atts):
            st.caption(note)

    st.subheader("Per parameter group")
    metric = st.selectbox(
        "Metric", list(HEATMAP_METRICS), format_func=lambda m: HEATMAP_METRICS[m][0], key="ex_group_metric"
    )
    groups = groups_frame(atts)
    chart(groups_heatmap(groups, metric), f"parameter groups {metric}", key="ex_chart_groups")
    with st.expander("Parameter-group table (all objectives)"):
        table(groups, "parameter groups", key="ex_dl_groups")

    with st.expander("Episode table: every token with its role, segment and per-objective numbers"):
        tt = token_table(ep, atts)
        if shown is not atts and objective in shown.results:
            tt[f"grad_norm[{objective}]"] = shown.results[objective].grad_norm
        table(tt, "episode tokens", key="ex_dl_tokens")

# ------------------------------------------------------------------------------- the GRPO group
st.subheader("The GRPO group (Theorem 3.1)")
group_view.section(
    (*key, group_n, ref_digest, params_spec),
    checkpoint_of(req["path"], ckpt.hash, req.get("fmt", ())),
    lambda: sample_group(
        checkpoint_of(req["path"], ckpt.hash, req.get("fmt", ())),
        problem_of(req["problem"]),
        sampling_config(*req["cfg"]),
        group_n,
        GROUP_SEED_OFFSET + int(req["seed"]),
        first=ep,
    ),
    get_checkpoint(ref_ckpt_path) if ref_ckpt_path else None,
    params_spec,
    "ex",
    f"This episode and the {group_n} fresh rollouts its GRPO advantage came from, as one GRPO step sees "
    "them: each objective's gradient summed over the group, every episode weighted by its own advantage "
    "(both signs), split into sampling and decision tokens. Theorem 3.1 is about this sum, not one "
    "episode: on one episode the surrogate's split is exactly SFT's.",
)

# ------------------------------------------------------------------------------- decisions
explorer_decisions.render(ep, ckpt, decisions, key, req, shading)
