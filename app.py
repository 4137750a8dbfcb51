"""DS-Lens — Streamlit home page. Run with `make app`.

Pages only draw: everything they show comes from ds_core.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import streamlit as st

from ds_core.checkpoint import SHIPPED_DIR, CheckpointError, content_hash, find_checkpoints, read_card
from ds_core.store import ResultsStore, StoreError

st.set_page_config(page_title="DS-Lens", layout="wide")


@st.cache_resource(show_spinner=False)
def results_store() -> ResultsStore:
    return ResultsStore()


def eval_summary(path: Path) -> dict:
    """Headline metrics from the checkpoint's eval.json (written by `python -m ds_core report`)."""
    f = path / "eval.json"
    try:
        sizes = json.loads(f.read_text())["sizes"] if f.is_file() else {}
    except (ValueError, KeyError, UnicodeDecodeError):
        sizes = {}
    out = {}
    for size in ("3x3", "3x4", "3x6"):
        acc = (sizes.get(size) or {}).get("accuracy", {}).get("p")
        out[f"acc {size} %"] = None if acc is None else round(100 * acc)
    p_dw = ((sizes.get("3x3") or {}).get("p_dW") or {}).get("value")
    out["p_d|W 3x3 %"] = None if p_dw is None else round(100 * p_dw)
    return out


def checkpoint_rows(paths: list[Path]) -> tuple[pd.DataFrame, list[str]]:
    rows, problems = [], []
    for p in paths:
        try:
            card = read_card(p)
        except CheckpointError as e:
            problems.append(str(e))
            card = None
        ev = eval_summary(p)
        rows.append({
            "checkpoint": p.name, "condition": card.condition if card else "(no card)",
            **ev,
            "parent": (card.parent or "") if card else "", "seed": card.seed if card else None,
            "code version": card.code_version if card else "", "hash": content_hash(p),
            "path": str(p),
        })
    return pd.DataFrame(rows), problems


st.title("DS-Lens")
st.markdown(
    "**Why does RL give a language model a working self-check where SFT does not?** "
    "A self-correcting generation is a sequence of *attempts* (the **sampling** policy writes the "
    "worked steps, the answer and a check) each followed by a **decision** (`[STOP]` keeps the "
    "answer, `[RESAMPLE]` tries again). The Two-Stage Decision-Sampling hypothesis says RL's "
    "surrogate objective trains both policies in balance, while SFT and the KL penalty spend their "
    "gradient on the many sampling tokens and leave the few decision tokens under-trained.")
st.code("<bos>321*7654=  3:10731;2:04319+140501;1:007654+147165=147165#356*7404>6,153416  [STOP]<eos>\n"
        "   prompt       attempt (sampling: steps, answer, check; numbers least-significant digit first)"
        "   decision", language=None)

st.subheader("Checkpoints")
paths = find_checkpoints(SHIPPED_DIR)
extra = st.text_input("Another local checkpoint directory (any Hugging Face causal LM)", value="",
                      placeholder="/path/to/model_dir")
if extra.strip():
    p = Path(extra.strip()).expanduser()
    if not p.is_dir() or not (p / "config.json").is_file():
        st.error(f"{p} is not a checkpoint directory (it needs a config.json).")
    else:
        paths.append(p)
if paths:
    table, problems = checkpoint_rows(paths)
    st.dataframe(table, hide_index=True, width="stretch")
    for msg in problems:
        st.warning(msg)
else:
    st.info(f"No checkpoints found under {SHIPPED_DIR}.")

st.subheader("Results store")
try:
    store = results_store()
    runs = store.list_runs()
    st.write(f"Stored at `{store.path}`: {len(runs)} evaluation run(s).")
except StoreError as e:
    st.error(f"The results store cannot be opened: {e}")
