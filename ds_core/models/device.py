"""Where models run and in which precision: `--device` / DS_LENS_DEVICE, `--dtype` / DS_LENS_DTYPE.

Devices: "auto" (the default: CUDA when present, else Apple's MPS, else the CPU), "cpu", "cuda",
"cuda:N", "mps". Precision: "auto" (float32 on the CPU and MPS; bfloat16 on a CUDA device that
supports it, else float16), "float32", "bfloat16", "float16". Whatever the weights' precision,
log-probabilities are computed in float32 (ds_core.objectives.terms.token_logprobs) and the
attribution figures accumulate in float64 (ds_core.attribution.gradient.component_grams). Nothing needs a
GPU: the tests run on the CPU, and the shipped results were computed there (a GPU's sampled
episodes can differ from the CPU's in the last bits, and with them the stored runs).
"""

from __future__ import annotations

import os
import re

from ds_core.errors import UserError

DEVICE_ENV, DTYPE_ENV = "DS_LENS_DEVICE", "DS_LENS_DTYPE"
DTYPES = ("auto", "float32", "bfloat16", "float16")
DEVICE_HELP = f"auto (CUDA, else MPS, else CPU), cpu, cuda, cuda:N or mps (default ${DEVICE_ENV} or auto)"
DTYPE_HELP = f"auto (float32 on CPU/MPS, bfloat16 or float16 on CUDA), {', '.join(DTYPES[1:])} (default ${DTYPE_ENV})"


class DeviceError(UserError, ValueError):
    """A device or precision that does not exist here."""


def _mps_available(torch) -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_device(name: str | None = None) -> str:
    """The torch device string to load models on (module docstring); DeviceError if it is absent."""
    import torch

    name = (name or os.environ.get(DEVICE_ENV) or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return "cuda"
        return "mps" if _mps_available(torch) else "cpu"
    if name == "cpu":
        return "cpu"
    m = re.fullmatch(r"cuda(?::(\d+))?", name)
    if m:
        if not torch.cuda.is_available():
            raise DeviceError(f"device {name!r}: CUDA is not available on this machine (use cpu or auto)")
        if m.group(1) is not None and int(m.group(1)) >= torch.cuda.device_count():
            raise DeviceError(f"device {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
        return name
    if name == "mps":
        if not _mps_available(torch):
            raise DeviceError("device 'mps': Apple's MPS is not available on this machine (use cpu or auto)")
        return "mps"
    raise DeviceError(f"unknown device {name!r}; use {DEVICE_HELP}")


def resolve_dtype(name: str | None, device: str):
    """The torch dtype for weights on `device` (module docstring); DeviceError for an unknown name."""
    import torch

    name = (name or os.environ.get(DTYPE_ENV) or "auto").strip().lower()
    if name not in DTYPES:
        raise DeviceError(f"unknown dtype {name!r}; use {DTYPE_HELP}")
    if name == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    return getattr(torch, name)


def placement(device_type: str, dtype) -> dict | None:
    """{"device": type, "dtype": name} for a run's key, or None for float32 on the CPU (the runs
    every key had before devices were configurable)."""
    kind, dt = str(device_type).split(":")[0], str(dtype).replace("torch.", "")
    return None if (kind, dt) == ("cpu", "float32") else {"device": kind, "dtype": dt}


def current_placement() -> dict | None:
    """The placement load_checkpoint uses now (the same dict as ds_core.analysis.evaluate.
    placement_key of a model it loads)."""
    dev = resolve_device(None)
    return placement(dev, resolve_dtype(None, dev))
