"""Where models run: --device / DS_LENS_DEVICE and --dtype / DS_LENS_DTYPE resolve to this machine's
devices or say why not; a model loaded in another precision samples and attributes, and its runs
are stored apart from float32-on-CPU runs. (No test needs a GPU.)"""

import pytest
import torch

from ds_core.analysis.evaluate import placement_key, run_key
from ds_core.models.checkpoint import load_checkpoint
from ds_core.models.device import DeviceError, current_placement, resolve_device, resolve_dtype
from ds_core.models.sampling import SamplingConfig
from ds_core.paths import SHIPPED_DIR


def test_devices_resolve_or_say_why(monkeypatch):
    monkeypatch.delenv("DS_LENS_DEVICE", raising=False)
    monkeypatch.delenv("DS_LENS_DTYPE", raising=False)
    assert resolve_device("cpu") == "cpu" and resolve_dtype(None, "cpu") == torch.float32
    assert resolve_device(None) == ("cuda" if torch.cuda.is_available() else resolve_device("auto"))
    assert resolve_dtype("bfloat16", "cpu") == torch.bfloat16
    with pytest.raises(DeviceError, match="unknown device 'tpu'"):
        resolve_device("tpu")
    with pytest.raises(DeviceError, match="unknown dtype"):
        resolve_dtype("int8", "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="CUDA is not available"):
            resolve_device("cuda:0")
        monkeypatch.setenv("DS_LENS_DEVICE", "cuda")
        with pytest.raises(DeviceError, match="CUDA"):
            load_checkpoint(SHIPPED_DIR / "rl")
    monkeypatch.setenv("DS_LENS_DEVICE", "cpu")
    assert current_placement() is None
    monkeypatch.setenv("DS_LENS_DTYPE", "bfloat16")
    assert current_placement() == {"device": "cpu", "dtype": "bfloat16"}


def test_a_half_precision_model_runs_and_is_keyed_apart(monkeypatch):
    from ds_core.attribution.gradient import attribute
    from ds_core.episodes.tasks import Problem
    from ds_core.models.rollout import rollout

    monkeypatch.setenv("DS_LENS_DEVICE", "cpu")
    ck = load_checkpoint(SHIPPED_DIR / "rl", dtype="bfloat16")
    assert next(ck.model.parameters()).dtype == torch.bfloat16
    assert ck.hash == load_checkpoint(SHIPPED_DIR / "rl").hash  # the same files
    ep = rollout(ck.model, ck.tokenizer, ck.format, [Problem(123, 45)], SamplingConfig(), seed=0)[0]
    r = attribute(ck, ep, "sft_sum", norms=False)
    assert r.method["dtype"] == "bfloat16" and r.figures.norm_G > 0 and abs(sum(r.share) - 1) < 0.05
    assert placement_key(ck.model) == {"device": "cpu", "dtype": "bfloat16"}
    cfg = SamplingConfig()
    plain = run_key(ck.hash, "t", 1, cfg, 0)
    half = run_key(ck.hash, "t", 1, cfg, 0, placement=placement_key(ck.model))
    assert plain != half and half.extra["placement"]["dtype"] == "bfloat16"


def test_cli_device_option(capsys):
    from ds_core.cli import main

    rc = main(["explore", "--checkpoint", str(SHIPPED_DIR / "rl"), "--prompt", "12*34", "--device", "tpu"])
    err = capsys.readouterr().err
    assert rc == 2 and "unknown device 'tpu'" in err and "Traceback" not in err
    import os

    assert "DS_LENS_DEVICE" not in os.environ or os.environ["DS_LENS_DEVICE"] != "tpu"
