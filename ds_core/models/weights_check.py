"""What a checkpoint's weights claim, checked before anything is allocated or hashed.

A safetensors file is an 8-byte header length, a JSON header (every tensor's dtype, shape and byte
range) and the tensor data. `inspect_file` reads only the header (bounded by ds_core.store.jsonread)
and checks it against the file: a header that claims bytes the file does not hold (mmap would fail
with a raw RuntimeError) or a file far bigger than its header says (a sparse file that would take
minutes to hash) is refused in plain words. `check_weights` adds the machine: weights that need more
memory than it has are refused before loading; `check_config` compares config.json with the
weights' shapes, so an absurd layer count or vocabulary is named instead of being instantiated.
"""

from __future__ import annotations

import math
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path

from ds_core.errors import UserError
from ds_core.store import jsonread

HEADER_MAX_BYTES = 100 * 1024 * 1024  # safetensors' own limit
DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8,
}  # fmt: skip
# config limits beyond any causal LM there is (the largest public ones: ~128 layers, ~256k vocabulary)
CONFIG_LIMITS = {
    "num_hidden_layers": 10_000,
    "n_layer": 10_000,
    "vocab_size": 10_000_000,
    "hidden_size": 1_000_000,
    "n_embd": 1_000_000,
    "intermediate_size": 10_000_000,
    "num_attention_heads": 100_000,
    "max_position_embeddings": 100_000_000,
}
_LAYER = re.compile(r"\.(?:layers|h|blocks|layer)\.(\d+)\.")
_EMBED = ("embed_tokens.weight", "wte.weight", "word_embeddings.weight", "embed_in.weight")


class WeightsError(UserError, ValueError):
    """Weights or a config that claim what the files or the machine cannot hold."""


@dataclass(frozen=True)
class FileClaims:
    path: Path
    n_tensors: int
    numel: int  # elements of all tensors
    data_bytes: int  # bytes of tensor data the header claims
    shapes: dict  # name -> shape


def gib(n: float) -> str:
    """Bytes in words: GiB, MiB or KiB."""
    for unit, size in (("GiB", 2**30), ("MiB", 2**20)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n / 2**10:.1f} KiB"


def machine_memory() -> int:
    """Physical memory of this machine in bytes (0 when unknown)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 0


def inspect_file(f: Path) -> FileClaims:
    """The header of one safetensors file, checked against the file's size (nothing else is read)."""
    size = f.stat().st_size

    def bad(detail: str) -> WeightsError:
        return WeightsError(f"{f.name} is not a valid safetensors file (corrupt or truncated): {detail}")

    with open(f, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise bad(f"{size} bytes is too short for one")
        (n,) = struct.unpack("<Q", head)
        if n > HEADER_MAX_BYTES or n > size - 8:
            raise bad(f"it claims a header of {n:,} bytes and holds {size:,} bytes")
        header = jsonread.loads(fh.read(n), f"the header of {f.name}", max_bytes=HEADER_MAX_BYTES, expect=dict)
    body = size - 8 - n
    numel = end = 0
    shapes = {}
    for key, t in header.items():
        if key == "__metadata__":
            continue
        try:
            dtype, shape, (b0, b1) = t["dtype"], [int(d) for d in t["shape"]], t["data_offsets"]
            b0, b1 = int(b0), int(b1)
        except (KeyError, TypeError, ValueError):
            raise bad(f"the header's entry for {key!r} is not a tensor description") from None
        count = math.prod(shape)
        if dtype not in DTYPE_BYTES or min(shape, default=1) < 0 or not 0 <= b0 <= b1:
            raise bad(f"the header's entry for {key!r} is not a tensor description")
        if (b1 - b0) != count * DTYPE_BYTES[dtype]:
            raise bad(
                f"tensor {key!r} of shape {shape} in {dtype} needs {count * DTYPE_BYTES[dtype]:,} bytes "
                f"but the header gives it {b1 - b0:,}"
            )
        numel += count
        end = max(end, b1)
        shapes[key] = tuple(shape)
    if end > body:
        raise bad(f"its header claims {gib(end)} of tensor data and the file holds {gib(body)}")
    if body > end:
        raise bad(f"it holds {gib(body - end)} more than its header describes ({gib(end)} of tensors in {gib(size)})")
    return FileClaims(f, len(shapes), numel, end, shapes)


def check_weights(files: list[Path], load_bytes_per_element: int | None = None) -> list[FileClaims]:
    """inspect_file for each file; then the total against the machine's memory (the data as stored,
    or `load_bytes_per_element` per element when loading converts, e.g. bf16 to float32)."""
    claims = []
    for f in files:
        try:
            claims.append(inspect_file(f))
        except OSError as e:
            raise WeightsError(f"{f.name} cannot be read: {e.strerror or e}") from None
    need = sum(c.numel * load_bytes_per_element if load_bytes_per_element else c.data_bytes for c in claims)
    have = machine_memory()
    if have and need > have:
        raise WeightsError(
            f"the weights need {gib(need)} of memory to load and this machine has {gib(have)}: "
            "load it on a bigger machine (or in half precision: --dtype bfloat16)"
        )
    return claims


def check_config(cfg: dict, claims: list[FileClaims]) -> None:
    """config.json's sizes against absurd limits and against the shapes the weights hold."""
    for key, limit in CONFIG_LIMITS.items():
        v = cfg.get(key)
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise WeightsError(f"config.json's {key} is {v!r}; it must be a non-negative integer")
        if v > limit:
            raise WeightsError(
                f"config.json asks for {key} = {v:,}, beyond any real model (the limit here is {limit:,})"
            )
    shapes = {k: s for c in claims for k, s in c.shapes.items()}
    if not shapes:
        return
    layers = {int(m.group(1)) for k in shapes if (m := _LAYER.search(k))}
    want = cfg.get("num_hidden_layers", cfg.get("n_layer"))
    if layers and isinstance(want, int) and want != len(layers):
        raise WeightsError(
            f"config.json asks for {want:,} layers (num_hidden_layers) but the weights hold {len(layers):,}"
        )
    emb = next((s for k, s in shapes.items() if k.endswith(_EMBED) and len(s) == 2), None)
    vocab = cfg.get("vocab_size")
    if emb is not None and isinstance(vocab, int) and vocab != emb[0]:
        raise WeightsError(f"config.json's vocab_size is {vocab:,} but the weights' embedding has {emb[0]:,} rows")
