"""Compare checkpoints: two or more checkpoints on the same problem and seed, then every model
teacher-forced on one transcript (per-token Δ log-prob, decision-token probabilities, Δ gradient
attribution), so that a difference is about the model, not the sample.

Pages only draw: sampling lives in ui.services.compare, scoring in ui.services.compare_teacher_forcing,
attribution in ui.services.compare_attribution.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from ds_core.attribution.reference import parent_among
from ds_core.episodes.tasks import OOD_SIZES, TEST_SET_N, TEST_SET_SIZES, TRAIN_SIZES, Problem, pick_problem
from ds_core.models.checkpoint import content_hash
from ds_core.models.sampling import SamplingConfig
from ds_core.objectives import OBJECTIVES
from ui.charts.compare import (
    attribution_figures_chart,
    cross_chart,
    decision_chart,
    delta_chart,
    role_delta_chart,
    share_diff_chart,
)
from ui.common import (
    DS_FORMAT_NOTE,
    add_user_checkpoint,
    chart,
    checkpoint_choices,
    get_checkpoint,
    max_tokens_input,
    pick_checkpoints,
    sampling_inputs,
    table,
    text_format_inputs,
    user_errors,
)
from ui.services.compare import CompareError, outcome_frame, outcome_line
from ui.services.compare_attribution import attribution_comparison, default_advantage
from ui.services.compare_teacher_forcing import cross_likelihood, teacher_force_scores
from ui.services.episodes import episode_frame
from ui.tokens import legend_html, token_html
from ui.views import compare_testset
from ui.views.compare_work import cached_attribution, cached_episode, cached_scores, cached_vocab_problem

st.set_page_config(page_title="Compare checkpoints · DS-Lens", layout="wide")

REQUEST = "cmp_request"
MAX_CHECKPOINTS = 6
SOURCES = {"Fixed test set": "test set", "Typed": "typed", "Random of a size": "random"}


def _size_note(p: Problem) -> str:
    s = p.size
    if s in TRAIN_SIZES:
        return f"{s}, in the training distribution"
    if s in OOD_SIZES:
        return f"{s}, out of distribution"
    return s


# --- page ------------------------------------------------------------------------------------
st.title("Compare checkpoints")
st.markdown(
    "Run two or more checkpoints on **the same problem with the same seed** (each episode draws "
    "the same random numbers, so identical models write identical episodes), then take **one "
    "checkpoint's episode as a fixed transcript** and teacher-force it through every model: the "
    "per-token Δ log-prob, the probabilities each model gives `[STOP]` / `[RESAMPLE]` at each "
    "decision, and the gradient attribution of an objective under each model. A difference on a "
    "fixed transcript is about the model, not the sample."
)

with st.expander("Add another checkpoint directory (any local Hugging Face causal LM)"):
    extra = st.text_input("Checkpoint directory", value="", key="cmp_extra", placeholder="/path/to/model_dir")
    if extra.strip():
        with user_errors("That directory cannot be compared"):
            ck = get_checkpoint(extra.strip())
            add_user_checkpoint(str(ck.path.resolve()))
            st.success(f"Added {ck.path.name} ({ck.arch}, hash {ck.hash}); pick it below.")

choices = checkpoint_choices()
label_of = {v: k for k, v in choices.items()}
paths = pick_checkpoints(f"Checkpoints (two to {MAX_CHECKPOINTS})", key="cmp_ckpts")

c_prob, c_samp = st.columns([3, 2])
with c_prob:
    src_label = st.radio("Problem", list(SOURCES), horizontal=True, key="cmp_src")
    source_kind = SOURCES[src_label]
    if source_kind == "test set":
        a1, a2 = st.columns(2)
        size = a1.selectbox(
            "Test set",
            TEST_SET_SIZES,
            index=TEST_SET_SIZES.index("3x4"),
            key="cmp_ts_size",
            help="3x3 and 3x4: training distribution; 3x5..3x9: out of distribution",
        )
        index = a2.number_input(
            f"Problem index (0..{TEST_SET_N - 1})",
            min_value=0,
            max_value=TEST_SET_N - 1,
            value=5,
            step=1,
            key="cmp_ts_index",
            help="default 3x4 #5: with seed 0, sft_reflection keeps a wrong first answer and rl resamples",
        )
        problem_args = {"size": size, "index": int(index)}
    elif source_kind == "typed":
        text = st.text_input(
            "Problem",
            value="123*4567",
            key="cmp_text",
            help="e.g. 123*4567, 123 x 4567, What is 123 times 4567?, 12 + 345",
        )
        problem_args = {"text": text}
    else:
        a1, a2 = st.columns(2)
        size = a1.text_input("Size (e.g. 3x5, 2+7; 1..12 digits)", value="3x5", key="cmp_rnd_size")
        pseed = a2.number_input("Problem seed", min_value=0, max_value=2**31 - 1, value=0, step=1, key="cmp_rnd_seed")
        problem_args = {"size": size, "seed": int(pseed)}
with c_samp:
    s1, s2 = st.columns(2)
    temperature, top_p, max_attempts, seed = sampling_inputs("cmp", (s1, s2, s1, s2))
    max_new = max_tokens_input("cmp", st)
fmt = text_format_inputs("cmp")

cfg_t = (float(temperature), float(top_p), int(max_attempts), max_new)  # SamplingConfig's field order
current = {
    "paths": tuple(paths),
    "source": source_kind,
    "problem_args": problem_args,
    "cfg": cfg_t,
    "seed": int(seed),
    "fmt": fmt,
}

if st.button("Compare", type="primary", key="cmp_go"):
    if len(paths) < 2:
        st.warning("Pick at least two checkpoints to compare.")
    elif len(paths) > MAX_CHECKPOINTS:
        st.warning(f"Pick at most {MAX_CHECKPOINTS} checkpoints (you picked {len(paths)}).")
    else:
        with user_errors("Cannot compare"):
            problem = pick_problem(source_kind, **problem_args)
            SamplingConfig(*cfg_t)  # validates the settings
            st.session_state[REQUEST] = {
                **current,
                "problem": (problem.a, problem.b, problem.op),
                "labels": tuple(label_of.get(p, Path(p).name) for p in paths),
            }

req = st.session_state.get(REQUEST)
if req is None:
    st.info("Pick checkpoints, a problem and sampling settings, then press **Compare**.")
    st.stop()
if {k: req[k] for k in current} != current:
    st.info("The settings above changed since the comparison below: press **Compare** to update it.")

problem = Problem(*req["problem"])
labels = list(req["labels"])
st.markdown(
    f"**Problem:** {problem.display} = {problem.answer} ({_size_note(problem)}) · "
    f"temperature {req['cfg'][0]:g}, top-p {req['cfg'][1]:g}, retry cap {req['cfg'][2]}, "
    + (f"at most {req['cfg'][3]} new tokens, " if req["cfg"][3] else "")
    + f"seed {req['seed']}"
)

# --- 1. sampled episodes ---------------------------------------------------------------------
st.header("Sampled episodes")
digests: dict[str, str] = {}
episodes = {}
bar = st.progress(0.0, text="Sampling…")
for i, (label, path) in enumerate(zip(labels, req["paths"])):
    bar.progress(i / len(labels), text=f"Sampling {label} ({i + 1}/{len(labels)})…")
    with user_errors(f"{label}"):
        if not Path(path).is_dir():
            raise CompareError(f"{path} is no longer a directory")
        digests[label] = content_hash(path)
        episodes[label] = cached_episode(path, digests[label], req["problem"], req["cfg"], req["seed"], req["fmt"])
bar.empty()
if not episodes:
    st.stop()
path_of = dict(zip(labels, req["paths"]))
labels = [x for x in labels if x in episodes]

table(outcome_frame(episodes), "compare outcomes", key="cmp_dl_outcomes")
st.caption(DS_FORMAT_NOTE)
st.html(legend_html())
for label, ep in episodes.items():
    st.markdown(f"**{label}** — {outcome_line(ep)}")
    st.html(token_html(episode_frame(ep), hover=["segment"]))

# --- 2. teacher forcing ----------------------------------------------------------------------
st.header("Teacher-forced on one transcript")
if len(labels) < 2:
    st.warning("At least two checkpoints must have sampled an episode to compare them.")
    st.stop()
key_paths = tuple(path_of[x] for x in labels)
key_digests = tuple(digests[x] for x in labels)
vocab_msg = None
with user_errors("Cannot check the vocabularies"):
    vocab_msg = cached_vocab_problem(tuple(labels), key_paths, key_digests)
if vocab_msg:
    st.error(f"These checkpoints cannot be teacher-forced together: {vocab_msg}")
    st.stop()

c1, c2, c3 = st.columns([2, 2, 1])
source = c1.selectbox("Transcript: the episode sampled by", labels, index=len(labels) - 1, key="cmp_source")
others = [x for x in labels if x != source]
other = c2.selectbox("Shade tokens by the difference of", others, key="cmp_other") if len(others) > 1 else others[0]
with_prompt = c3.toggle(
    "Show prompt",
    value=False,
    key="cmp_prompt",
    help="The prompt is the problem itself: no model chose it, and its log-probs "
    "dwarf the generated tokens' differences",
)

transcripts = tuple(tuple(ep.token_ids) for ep in episodes.values())
scores = {}
bar = st.progress(0.0, text="Teacher-forcing…")
for i, label in enumerate(labels):
    bar.progress(i / len(labels), text=f"Teacher-forcing every transcript through {label}…")
    with user_errors(f"Scoring with {label}"):
        scores[label] = cached_scores(path_of[label], digests[label], transcripts)
bar.empty()
if len(scores) < len(labels):
    st.stop()
idx = labels.index(source)
tf = teacher_force_scores(episodes[source], source, {x: scores[x][idx] for x in labels})
for note in tf.notes:
    st.info(note)

st.caption(
    f"Shading: Δ log p = log p_{other}(token | prefix) − log p_{source}(token | prefix) on "
    f"{source}'s tokens (red: {other} finds the token more likely, blue: less). Hover a token "
    f"for its numbers (transcript model: {source}, compared model: {other})."
)
st.html(
    token_html(
        tf.pair(other, include_prompt=with_prompt),
        value="delta",
        hover=["segment", "logp_transcript_model", "logp_compared_model", "delta"],
    )
)
chart(
    delta_chart(tf.tokens, source, include_prompt=with_prompt),
    f"delta logprob on {source} transcript",
    key="cmp_ch_delta",
)
with st.expander("Per-token log-probs of every model (table)"):
    table(tf.tokens, f"per-token logprobs on {source} transcript", key="cmp_dl_tokens")

st.subheader("By role: sampling vs decision tokens")
cr1, cr2 = st.columns([3, 2])
with cr1:
    chart(role_delta_chart(tf.roles, source), f"role delta on {source} transcript", key="cmp_ch_roles")
with cr2:
    table(tf.roles, f"role summary on {source} transcript", key="cmp_dl_roles")

st.subheader("Decision tokens: p(STOP) and p(RESAMPLE) at each decision")
chart(decision_chart(tf.decisions), f"decision probabilities on {source} transcript", key="cmp_ch_dec")
table(tf.decisions, f"decisions on {source} transcript", key="cmp_dl_dec")

with st.expander("Every model on every transcript (mean log-prob)"):
    cross = cross_likelihood(episodes, scores)
    role_x = st.radio("Tokens", ["generated", "sampling", "decision"], horizontal=True, key="cmp_cross_role")
    chart(cross_chart(cross, role_x), f"cross likelihood {role_x}", key="cmp_ch_cross")
    table(cross, "cross likelihood", key="cmp_dl_cross")

# --- 3. over a test set (ui.views.compare_testset) -------------------------------------------
compare_testset.render(labels, path_of, tuple(req["cfg"]), int(req["seed"]))

# --- 4. delta attribution --------------------------------------------------------------------
st.header("Δ attribution on the same transcript")
st.caption(
    "For one objective, the gradient of its per-token terms on this transcript is split into "
    "G_S (sampling tokens) and G_D (decision tokens) under each model (ds_core.attribution, "
    "per-token norms off). Share s_t = ⟨∇l_t, G⟩/|G|² sums to 1 over the tokens."
)

ep_src = episodes[source]
a1, a2, a3 = st.columns(3)
objective = a1.selectbox(
    "Objective",
    list(OBJECTIVES),
    format_func=lambda o: OBJECTIVES[o].label,
    index=list(OBJECTIVES).index("surrogate"),
    key="cmp_objective",
)
a1.caption(OBJECTIVES[objective].description)
advantage = ref_path = ref_digest = None
ref_label = None
if "advantages" in OBJECTIVES[objective].needs:
    advantage = float(
        a2.number_input(
            "Advantage A",
            min_value=-100.0,
            max_value=100.0,
            value=default_advantage(ep_src),
            step=0.5,
            key=f"cmp_adv_{source}",
            help="default: +1 when the transcript's final answer is correct, -1 otherwise",
        )
    )
if "ref_logp" in OBJECTIVES[objective].needs:
    all_choices = checkpoint_choices()
    names = list(all_choices)
    parent = parent_among(get_checkpoint(path_of[source]), all_choices)
    default = parent or ("sft_reflection" if "sft_reflection" in names else names[0])
    ref_label = a2.selectbox(
        "KL reference (one for every model)",
        names,
        index=names.index(default),
        key="cmp_ref",
        help=f"default: {source}'s parent when known",
    )
    ref_path, msg = all_choices[ref_label], None
    with user_errors("KL reference"):
        ref_digest = content_hash(ref_path)
        msg = cached_vocab_problem(
            (source, f"{ref_label} (reference)"), (path_of[source], ref_path), (digests[source], ref_digest)
        )
        if msg:
            raise CompareError(f"the reference cannot score this transcript: {msg}")
    if ref_digest is None or msg:
        st.stop()

src_key = (path_of[source], digests[source], req["problem"], req["cfg"], req["seed"], req["fmt"])
results = {}
bar = st.progress(0.0, text="Attributing…")
for i, label in enumerate(labels):
    bar.progress(i / len(labels), text=f"Attributing {OBJECTIVES[objective].label} under {label}…")
    with user_errors(f"Attribution under {label}"):
        res, err = cached_attribution(
            path_of[label], digests[label], src_key, objective, advantage, ref_path, ref_digest
        )
        results[label] = res if res is not None else err
bar.empty()
if results:
    ac = attribution_comparison(ep_src, source, objective, results, advantage=advantage, ref=ref_label)
    for label, err in ac.errors.items():
        st.warning(f"{label}: no attribution — {err}")
    chart(attribution_figures_chart(ac.figures, objective), f"attribution figures {objective}", key="cmp_ch_fig")
    table(ac.figures, f"attribution figures {objective} on {source} transcript", key="cmp_dl_fig")
    if source in ac.errors:
        st.info(f"No share difference: {source}'s own attribution (the transcript's model) failed.")
    elif other in ac.errors:
        st.info(f"No share difference for {other}: its attribution failed.")
    else:
        st.caption(f"Shading: Δ share = s_t({other}) − s_t({source}) (red: a larger share of {other}'s gradient).")
        st.html(
            token_html(
                ac.pair(other),
                value="share_diff",
                hover=["segment", "share_transcript_model", "share_compared_model", "share_diff"],
            )
        )
        chart(share_diff_chart(ac.tokens, source, objective), f"share difference {objective}", key="cmp_ch_share")
    with st.expander("Per-token attribution of every model (table)"):
        table(ac.tokens, f"per-token attribution {objective} on {source} transcript", key="cmp_dl_attr")
