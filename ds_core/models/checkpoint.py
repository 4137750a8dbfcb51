"""Checkpoint I/O: any local Hugging Face causal-LM directory, safetensors only, plus a card.

    ckpt = load_checkpoint("checkpoints/rl")      # model, tokenizer, card, content hash, format
    save_checkpoint("out/my", model, tokenizer, Card(condition="sft", seed=0))

Refused with a `CheckpointError` that says why: a path that is not a directory, no config.json,
pickle-only weights (pytorch_model.bin: unpickling can run code), corrupt safetensors, a missing
tokenizer, a tokenizer larger than the model's vocabulary, a model that needs remote code.
`trust_remote_code` is never enabled.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ds_core import __version__
from ds_core.episodes.formats import format_for
from ds_core.episodes.tokenizer import register_generation_config
from ds_core.errors import UserError
from ds_core.models.locks import guard
from ds_core.models.weights_check import WeightsError, check_config, check_weights
from ds_core.paths import REPO_ROOT, SHIPPED_DIR
from ds_core.store import jsonread
from ds_core.store.jsonio import to_jsonable

CARD_FILE = "card.json"
_LOAD_LOCK = threading.RLock()  # load_checkpoint and load_tokenizer
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
CONFIG_MAX_BYTES = 4 * 1024 * 1024  # config.json and card.json: a few kB in practice
# the JSON files of a model directory that transformers / tokenizers read themselves
HF_JSON_FILES = (
    "generation_config.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "tokenizer.json",
)
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "vocab.txt",
    "added_tokens.json",
)
# what the content hash covers: weights, config and the vocabulary itself; tokenizer_config.json is
# left out because transformers rewrites bookkeeping fields in it on every save
HASHED_TOKENIZER_FILES = (
    "tokenizer.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "vocab.txt",
    "added_tokens.json",
)


class CheckpointError(UserError, ValueError):
    """A directory cannot be loaded as a checkpoint; the message says why and what to do."""


def code_version() -> str:
    try:
        sha = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"{__version__}+{sha}" if sha else __version__


@dataclass(frozen=True)
class Card:
    """What a checkpoint is: condition, how it was trained, on what, and what it scored."""

    condition: str
    seed: int = 0
    training: dict = field(default_factory=dict)
    data_recipe: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    parent: str | None = None  # checkpoint this one was trained from
    code_version: str = field(default_factory=code_version)
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    wall_time_s: float | None = None
    notes: str = ""

    def __post_init__(self):
        if not isinstance(self.condition, str) or not self.condition.strip():
            raise ValueError("a card needs a non-empty condition")
        for name in ("training", "data_recipe", "metrics"):
            if not isinstance(getattr(self, name), dict):
                raise ValueError(f"card field {name} must be a dict")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Card:
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        return cls(**known)


@dataclass(frozen=True, eq=False)
class Checkpoint:
    path: Path
    model: object
    tokenizer: object
    card: Card | None
    hash: str
    format: object

    @property
    def name(self) -> str:
        return self.card.condition if self.card else self.path.name

    @property
    def arch(self) -> str:
        return getattr(self.model.config, "model_type", "?")


# --- hashing ---------------------------------------------------------------------------------
_HASH_MEMO: dict[tuple, str] = {}


def _hashed_files(path: Path) -> list[Path]:
    files = [path / "config.json", *sorted(path.glob("*.safetensors")), *sorted(path.glob("*.safetensors.index.json"))]
    files += [path / n for n in HASHED_TOKENIZER_FILES if (path / n).is_file()]
    return [f for f in files if f.is_file()]


def content_hash(path: str | Path) -> str:
    """sha256 over config, weights and tokenizer files (not the card): identifies a checkpoint."""
    path = Path(path)
    files = _hashed_files(path)
    stamp = tuple((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    memo_key = (str(path.resolve()), stamp)
    if memo_key in _HASH_MEMO:
        return _HASH_MEMO[memo_key]
    try:  # a file that claims more than it holds (or far less) is refused before minutes of hashing
        check_weights([f for f in files if f.suffix == ".safetensors"])
    except WeightsError as e:
        raise CheckpointError(f"{path.name}: {e}") from None
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode() + b"\0")
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    digest = h.hexdigest()[:16]
    _HASH_MEMO[memo_key] = digest
    return digest


# --- checks ----------------------------------------------------------------------------------
def _check_dir(path: Path) -> dict:
    if not path.exists():
        raise CheckpointError(f"{path} does not exist")
    if not path.is_dir():
        raise CheckpointError(
            f"{path} is not a directory; a checkpoint is a directory with "
            "config.json, *.safetensors and tokenizer files"
        )
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise CheckpointError(f"{path} is not a Hugging Face model directory: no config.json")
    try:
        cfg = jsonread.read(cfg_file, str(cfg_file), max_bytes=CONFIG_MAX_BYTES, expect=dict)
    except jsonread.JSONReadError as e:
        raise CheckpointError(str(e)) from None
    # transformers and tokenizers parse these themselves: the same bounds first, in plain words
    for name in HF_JSON_FILES:
        if (path / name).is_file():
            try:
                jsonread.read(path / name, name, expect=dict)
            except jsonread.JSONReadError as e:
                raise CheckpointError(f"{name} in {path} cannot be loaded: {e}") from None
    if cfg.get("auto_map"):
        raise CheckpointError(
            f"{path} needs custom code (auto_map in config.json); DS-Lens never "
            "runs a checkpoint's own code (trust_remote_code stays off)"
        )
    return cfg


def _check_weights(path: Path, bytes_per_element: int | None = None) -> list:
    """The weights files' claims (ds_core.models.weights_check: headers against file sizes and the
    machine's memory), then each file opened once. Returns the claims (for check_config)."""
    from safetensors import SafetensorError, safe_open

    st = sorted(path.glob("*.safetensors"))
    if not st:
        pickles = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if pickles:
            raise CheckpointError(
                f"{path} has only pickle weights ({', '.join(pickles)}). DS-Lens loads safetensors "
                "only: unpickling a file can run arbitrary code. Convert it once where you trust it, "
                "e.g. model.save_pretrained(dir, safe_serialization=True)."
            )
        raise CheckpointError(f"{path} has no weights (*.safetensors)")
    try:
        claims = check_weights(st, bytes_per_element)
    except WeightsError as e:
        raise CheckpointError(f"{e} (in {path})") from None
    for f in st:
        try:
            with safe_open(str(f), framework="pt") as h:
                for k in list(h.keys())[:1]:
                    h.get_slice(k)
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(
                f"{f.name} in {path} is not a valid safetensors file (corrupt or truncated): {e}"
            ) from None
    return claims


def _itemsize(dtype) -> int | None:
    try:
        return int(dtype.itemsize)
    except AttributeError:
        return None


def _has_tokenizer(path: Path) -> bool:
    return any((path / n).is_file() for n in ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt"))


def load_tokenizer(path: str | Path):
    from transformers import AutoTokenizer

    path = Path(path)
    if not _has_tokenizer(path):
        raise CheckpointError(
            f"{path} has no tokenizer (tokenizer.json or vocabulary files); "
            "save one with tokenizer.save_pretrained(dir)"
        )
    try:
        with _LOAD_LOCK:
            return AutoTokenizer.from_pretrained(str(path), local_files_only=True, trust_remote_code=False)
    except Exception as e:  # transformers raises many types here
        raise CheckpointError(f"the tokenizer in {path} cannot be loaded: {e}") from None


@contextmanager
def _quiet_transformers():
    """Silence transformers' progress bars and info logs while loading/saving tiny checkpoints."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def load_checkpoint(
    path: str | Path, *, attn_implementation: str | None = None, device: str | None = None, dtype: str | None = None
) -> Checkpoint:
    """Load a local HF causal-LM directory (safetensors only) with its tokenizer and card, on
    `device` in `dtype` (ds_core.models.device: default $DS_LENS_DEVICE / $DS_LENS_DTYPE, else
    auto: CUDA, MPS or the CPU; float32 on the CPU)."""
    from transformers import AutoModelForCausalLM

    from ds_core.models.device import resolve_device, resolve_dtype

    path = Path(path).expanduser()
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    cfg = _check_dir(path)
    claims = _check_weights(path, _itemsize(dt))
    try:
        check_config(cfg, claims)
    except WeightsError as e:
        raise CheckpointError(f"{path.name}: {e}") from None
    tokenizer = load_tokenizer(path)
    kw = {"attn_implementation": attn_implementation} if attn_implementation else {}
    try:
        # one load at a time: transformers' loading context (no_init_weights, tied-weight
        # bookkeeping, logging verbosity) is process-wide, and two loads in threads at once report
        # tied weights as missing
        with _LOAD_LOCK, _quiet_transformers():
            model, info = AutoModelForCausalLM.from_pretrained(
                str(path),
                use_safetensors=True,
                trust_remote_code=False,
                local_files_only=True,
                output_loading_info=True,
                dtype=dt,
                **kw,
            )
    except Exception as e:
        raise CheckpointError(f"{path} cannot be loaded as a causal LM: {e}") from None
    missing = list(info.get("missing_keys", []))
    if missing:
        raise CheckpointError(
            f"{path} lacks weights for {len(missing)} tensors "
            f"(e.g. {', '.join(sorted(missing)[:3])}): the file is incomplete"
        )
    rows = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > rows:
        raise CheckpointError(
            f"tokenizer/model mismatch in {path}: the tokenizer has {len(tokenizer)} "
            f"tokens but the model's embedding has {rows} rows"
        )
    if next(model.parameters()).dtype != dt:
        model.to(dtype=dt)
    if dev != "cpu":
        model.to(dev)
    model.eval()
    guard(model)  # every forward pass under MODEL_LOCK (ds_core.models.locks)
    register_generation_config(tokenizer, getattr(model, "generation_config", None))
    card = read_card(path)
    return Checkpoint(path, model, tokenizer, card, content_hash(path), format_for(tokenizer))


def read_card(path: str | Path) -> Card | None:
    f = Path(path) / CARD_FILE
    if not f.is_file():
        return None
    try:
        return Card.from_dict(jsonread.read(f, str(f), max_bytes=CONFIG_MAX_BYTES, expect=dict))
    except jsonread.JSONReadError as e:
        raise CheckpointError(f"{f} is not a valid card: {e}") from None
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{f} is not a valid card: {e}") from None


def write_card(path: str | Path, card: Card) -> None:
    (Path(path) / CARD_FILE).write_text(json.dumps(to_jsonable(card.to_dict()), indent=2, allow_nan=False) + "\n")


def save_checkpoint(path: str | Path, model, tokenizer, card: Card) -> str:
    """Save model (safetensors), tokenizer and card; returns the content hash."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    with _quiet_transformers():
        model.save_pretrained(str(path))
        tokenizer.save_pretrained(str(path))
    for stray in path.iterdir():
        if stray.suffix in PICKLE_SUFFIXES:
            stray.unlink()
    write_card(path, card)
    return content_hash(path)


def find_checkpoints(root: str | Path = SHIPPED_DIR) -> list[Path]:
    """Checkpoint directories (with config.json) directly under root, sorted by name."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and (p / "config.json").is_file())
