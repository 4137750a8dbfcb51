"""One home per concept: sampling settings, the JSON policy, task names, the format protocol, the
objectives registry and the CLI's balance subcommand (old and new spelling), checked on real cases."""

import json
import math
import subprocess
import sys

import pytest

from ds_core.episodes.formats import DSFormat, TextFormat
from ds_core.episodes.tasks import Problem, TaskSpec, task_name, task_size
from ds_core.models.sampling import RolloutError, SamplingConfig
from ds_core.objectives import DEFAULT_OBJECTIVES, LABELS, OBJECTIVES, SHORT_LABELS, needs_ref, parse_objectives
from ds_core.store.jsonio import as_float, canonical_json, from_jsonable, to_jsonable


def test_sampling_config_is_validated_once_and_coerced():
    assert SamplingConfig.coerce(None) == SamplingConfig()
    cfg = SamplingConfig(temperature=0, top_p=1, max_attempts=2.0)
    assert cfg.temperature == 0.0 and isinstance(cfg.temperature, float) and cfg.max_attempts == 2
    assert SamplingConfig.coerce(cfg) is cfg
    assert SamplingConfig.coerce({"temperature": 0.5}).temperature == 0.5
    for bad in ({"temperature": "hot"}, {"top_p": math.nan}, {"max_attempts": 2.5}, {"batch_size": True}):
        with pytest.raises(RolloutError):
            SamplingConfig(**bad)
    with pytest.raises(RolloutError, match="unknown sampling settings: temp"):
        SamplingConfig.coerce({"temp": 1.0})
    with pytest.raises(RolloutError, match="mapping"):
        SamplingConfig.coerce([1.0])
    # the key a run is stored under does not change with an int or float spelling
    assert canonical_json(SamplingConfig(temperature=1).key()) == canonical_json(SamplingConfig(1.0).key())


def test_the_json_policy_round_trips_non_finite_values():
    x = {"a": math.nan, "b": [math.inf, -math.inf, 1.5], "c": (1, 2), "d": None}
    enc = to_jsonable(x)
    assert enc == {"a": None, "b": ["inf", "-inf", 1.5], "c": [1, 2], "d": None}
    text = json.dumps(enc, allow_nan=False)  # strict JSON
    back = from_jsonable(json.loads(text))
    assert back["b"] == [math.inf, -math.inf, 1.5] and back["a"] is None
    assert math.isnan(as_float(None)) and as_float("inf") == math.inf and math.isnan(as_float("nan"))
    assert as_float(2) == 2.0
    with pytest.raises(ValueError, match="key"):
        canonical_json({"x": math.nan})
    assert canonical_json({"b": 1.0, "a": 2}) == '{"a":2,"b":1}'


def test_task_names():
    assert task_name("3x4", 100, 7) == "3x4@test-v1"
    assert task_name(TaskSpec(3, 4), 101, 7) == "3x4@sampled-7"
    assert task_name("3x10", 5, 0) == "3x10@sampled-0"
    assert task_size("3x4@test-v1") == "3x4" and task_size("3x4") == "3x4"


def test_formats_answer_the_protocol(char_tokenizer):
    p = Problem(123, 4567)
    ds = DSFormat()
    ids = ds.prompt_ids(char_tokenizer, p)
    assert char_tokenizer.decode(ids) == ds.prompt_text(p) and ds.writes_traces
    assert ds.token_budget(p, 4) == int(4 * (1.5 * len(ds.attempt_text(p)) + 2)) + 8
    assert ds.token_budget(None, 3) == 768
    assert ds.min_tokens(char_tokenizer, p) == len(ids) + len(ds.attempt_text(p)) + 1
    tf = TextFormat()
    assert not tf.writes_traces and tf.token_budget(p, 2) == 512
    assert tf.min_tokens(char_tokenizer, p) == len(tf.prompt_ids(char_tokenizer, p)) + 1


def test_the_objectives_registry_is_torch_free():
    code = (
        "import sys; from ds_core.objectives import OBJECTIVES, LABELS; "
        "assert 'torch' not in sys.modules; print(len(OBJECTIVES))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "6", out.stderr
    assert set(LABELS) == set(SHORT_LABELS) == set(OBJECTIVES) == set(DEFAULT_OBJECTIVES)
    assert [o for o in OBJECTIVES if needs_ref(o)] == ["kl_k1", "kl_k3"]
    from ds_core.objectives import terms

    assert OBJECTIVES["dft"].fn is terms.dft_terms
    assert parse_objectives("kl_k3, surrogate,kl_k3") == ("kl_k3", "surrogate")
    with pytest.raises(ValueError, match="valid"):
        parse_objectives("nope")


@pytest.mark.parametrize("argv", [["-m", "ds_core", "balance", "precompute"], ["-m", "ds_core.balance", "precompute"]])
def test_balance_precompute_both_spellings(argv, tmp_path):
    """Both spellings reach the same command; a missing checkpoint folder is a clean error."""
    out = subprocess.run(
        [
            sys.executable,
            *argv,
            "--checkpoints",
            str(tmp_path / "none"),
            "--out",
            str(tmp_path / "b.json"),
            "--no-store",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 2, out.stderr
    assert out.stderr.startswith("error: ") and len(out.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "b.json").exists()
