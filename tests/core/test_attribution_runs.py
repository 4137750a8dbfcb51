"""ds_core.attribution.dataset: the attribution cache in the results store, dataset-level attribution
(frame, strata, summary, skipped episodes and objectives) and the `attribute` command."""

from __future__ import annotations

import pandas as pd
import pytest
from conftest import assert_clean_cli_error

import ds_core.analysis.evaluate as ev
import ds_core.attribution.cache as attribution_cache
import ds_core.attribution.dataset as ar
from ds_core.analysis.evaluate import run_key
from ds_core.attribution.cache import cache_key, cached_attribute
from ds_core.attribution.dataset import FRAME_COLUMNS, SUMMARY_METRICS, attribute_dataset, outcome_of
from ds_core.attribution.gradient import AttributionError, attribute
from ds_core.attribution.reference import resolve_ref
from ds_core.cli import main
from ds_core.episodes.formats import DSFormat
from ds_core.episodes.tasks import Problem
from ds_core.episodes.tasks import test_set as fixed_test_set
from ds_core.models.checkpoint import Card, load_checkpoint, save_checkpoint
from ds_core.models.model import init_model
from ds_core.models.rollout import prompt_prefix
from ds_core.models.sampling import SamplingConfig
from ds_core.objectives import DEFAULT_OBJECTIVES, parse_objectives
from ds_core.store import ResultsStore

FMT = DSFormat()
TINY = dict(hidden=32, layers=2, heads=2)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory, char_tokenizer):
    """base (no parent) and rl (card.parent = base's hash) side by side in one folder."""
    root = tmp_path_factory.mktemp("ckpts")
    h = save_checkpoint(
        root / "base", init_model(char_tokenizer, "llama", seed=0, **TINY), char_tokenizer, Card(condition="tiny-base")
    )
    save_checkpoint(
        root / "rl",
        init_model(char_tokenizer, "llama", seed=1, **TINY),
        char_tokenizer,
        Card(condition="tiny-rl", parent=h),
    )
    return root


@pytest.fixture(scope="module")
def base(ckpts):
    return load_checkpoint(ckpts / "base")


@pytest.fixture(scope="module")
def rl(ckpts):
    return load_checkpoint(ckpts / "rl")


@pytest.fixture
def store(tmp_path):
    return ResultsStore(tmp_path / "data")


def make(tok, problem, attempts, decisions=True):
    text = FMT.trace_text(problem, attempts) if decisions else FMT.prompt_text(problem) + attempts[0]
    ids = tok(text, add_special_tokens=False)["input_ids"]
    return FMT.parse(problem, ids, prompt_prefix(FMT, tok, problem).prompt_len, tok)


def right(p):
    return FMT.attempt_text(p)


def wrong(p):
    return FMT.attempt_text(p, answer=p.answer + 1)


@pytest.fixture(scope="module")
def eps(char_tokenizer):
    """correct kept, wrong revised, wrong kept (3x3), correct changed (3x4), and no decision."""
    tok = char_tokenizer
    p, q, r, t = Problem(123, 456), Problem(734, 219), Problem(905, 377), Problem(222, 333)
    s = Problem(312, 4567)
    out = [
        make(tok, p, [right(p)]),
        make(tok, q, [wrong(q), right(q)]),
        make(tok, r, [wrong(r)]),
        make(tok, s, [right(s), right(s)]),
        make(tok, t, [right(t)], decisions=False),
    ]
    assert [outcome_of(e) for e in out] == [
        "correct_kept",
        "wrong_revised",
        "wrong_kept",
        "correct_changed",
        "undecided",
    ]
    assert [e.correct for e in out[:4]] == [True, True, False, True]
    assert "decision" not in out[4].roles
    return out


def _raise(*a, **k):
    raise AssertionError("attribute() must not be called: the result is in the store")


# ------------------------------------------------------------------------------- the cache
def test_cache_hit_returns_the_stored_result(rl, base, eps, store, monkeypatch):
    r1 = cached_attribute(rl, eps[1], "surrogate", store, advantage=-1.0, norms=False)
    k1 = cached_attribute(rl, eps[1], "kl_k3", store, ref_model=base, norms=False)
    monkeypatch.setattr(attribution_cache, "attribute", _raise)
    r2 = cached_attribute(rl, eps[1], "surrogate", store, advantage=-1.0, norms=False)
    assert r2.to_dict() == r1.to_dict() and r2 == r1
    assert cached_attribute(rl, eps[1], "kl_k3", store, ref_model=base, norms=False) == k1
    # settings the objective does not use do not split the key
    assert (
        cached_attribute(
            rl, eps[1], "kl_k3", store, ref_model=base, norms=False, advantage=3.0, clip_eps=0.5, chunk_size=7
        )
        == k1
    )
    # anything that changes the result is a miss
    for kw in (
        dict(advantage=1.0),
        dict(advantage=-1.0, clip_eps=0.1),
        dict(advantage=-1.0, jvp_method="double_backward"),
        dict(advantage=-1.0, norms=True),
    ):
        with pytest.raises(AssertionError, match="must not be called"):
            cached_attribute(rl, eps[1], "surrogate", store, **{"norms": False, **kw})
    with pytest.raises(AssertionError, match="must not be called"):
        cached_attribute(rl, eps[0], "surrogate", store, advantage=-1.0, norms=False)
    with pytest.raises(AssertionError, match="must not be called"):  # another checkpoint
        cached_attribute(base, eps[1], "surrogate", store, advantage=-1.0, norms=False)
    with pytest.raises(AssertionError, match="must not be called"):  # recompute
        cached_attribute(rl, eps[1], "surrogate", store, advantage=-1.0, norms=False, recompute=True)


def test_cache_key_fields_and_bad_input(rl, base, eps):
    k = cache_key(rl, eps[0], "surrogate", advantage=1, norms=False)
    assert k["checkpoint"] == rl.hash and k["token_ids"] == list(eps[0].token_ids)
    assert k["roles"] == list(eps[0].roles) and k["objective"] == "surrogate"
    assert k["params"] == {"advantage": 1.0, "clip_eps": 0.2}
    assert k["method"] == {"jvp_method": "auto", "norms": False, "norms_method": None, "chunk_size": None}
    assert cache_key(rl, eps[0], "kl_k1", ref_model=base)["params"] == {"ref": base.hash}
    assert cache_key(rl, eps[0], "kl_k1", ref_model=rl)["params"] == {"ref": rl.hash}
    assert cache_key(rl, eps[0], "sft_sum", advantage=5.0, ref_model=base)["params"] == {}
    with pytest.raises(AttributionError, match="advantage"):
        cache_key(rl, eps[0], "surrogate")
    with pytest.raises(AttributionError, match="advantage"):
        cache_key(rl, eps[0], "surrogate", advantage=float("nan"))
    with pytest.raises(AttributionError, match="ref_model"):
        cache_key(rl, eps[0], "kl_k3")
    with pytest.raises(AttributionError, match="unknown objective"):
        cache_key(rl, eps[0], "nope")
    with pytest.raises(ValueError, match="content hash"):
        cache_key(rl.model, eps[0], "sft_sum")
    assert cache_key(rl.model, eps[0], "sft_sum", model_hash="abc")["checkpoint"] == "abc"


# ------------------------------------------------------------------------------- dataset level
def test_dataset_frame_strata_summary_and_values(rl, base, eps, store):
    calls = []
    ds = attribute_dataset(rl, eps, store=store, progress=lambda d, t: calls.append((d, t)))
    f = ds.frame
    assert tuple(f.columns) == FRAME_COLUMNS
    assert ds.objectives == DEFAULT_OBJECTIVES and ds.skipped_objectives == {}
    assert len(f) == 4 * len(DEFAULT_OBJECTIVES) and ds.n_episodes == 5
    assert ds.skipped == {"no_decision": 1} and any("without decision" in n for n in ds.notes)
    assert ds.ref_hash == base.hash and any("parent" in n for n in ds.notes)  # card.parent found
    assert calls[-1] == (5 * 6, 5 * 6) and [d for d, _ in calls] == sorted(d for d, _ in calls)
    assert set(f["outcome"]) == {"correct_kept", "wrong_revised", "wrong_kept", "correct_changed"}
    assert dict(f.groupby("size").size()) == {"3x3": 18, "3x4": 6}
    sur = f[f["objective"] == "surrogate"].set_index("outcome")["advantage"]
    assert sur.to_dict() == {"correct_kept": 1.0, "wrong_revised": 1.0, "wrong_kept": -1.0, "correct_changed": 1.0}
    assert f[f["objective"] != "surrogate"]["advantage"].isna().all()
    assert ((f["n_decision"] >= 1) & (f["n_sampling"] > f["n_decision"])).all()
    # the frame's figures are attribute()'s
    for i, o in [(1, "surrogate"), (2, "kl_k3"), (3, "sft_mean"), (0, "dft")]:
        kw = {"advantage": 1.0 if eps[i].correct else -1.0} if o == "surrogate" else {}
        if o.startswith("kl"):
            kw["ref_model"] = base
        fig = attribute(rl, eps[i], o, norms=False, **kw).figures
        row = f[(f["objective"] == o) & (f["outcome"] == outcome_of(eps[i]))].iloc[0]
        for col, v in [
            ("ratio_SD", fig.ratio_SD),
            ("ratio_SD_per_token", fig.ratio_SD_per_token),
            ("cos_SD", fig.cos_SD),
            ("share_D", fig.share_D),
            ("share_S", fig.share_S),
            ("norm_G_S", fig.norm_G_S),
            ("norm_G_D", fig.norm_G_D),
        ]:
            assert row[col] == pytest.approx(v, rel=1e-9, abs=1e-12), (o, col)
        assert (row["n_sampling"], row["n_decision"]) == (fig.n_S, fig.n_D)
    # summary: per objective x size x outcome plus 'all' margins
    s = ds.summary
    assert {"objective", "size", "outcome", "n"} <= set(s.columns)
    for m in SUMMARY_METRICS:
        assert {f"{m}_{k}" for k in ("median", "q1", "q3", "iqr", "mean")} <= set(s.columns)
    for o in DEFAULT_OBJECTIVES:
        so = s[s["objective"] == o]
        whole = so[(so["size"] == "all") & (so["outcome"] == "all")].iloc[0]
        assert whole["n"] == 4
        vals = f[f["objective"] == o]["ratio_SD"]
        assert whole["ratio_SD_median"] == pytest.approx(vals.median())
        assert whole["ratio_SD_mean"] == pytest.approx(vals.mean())
        assert whole["share_D_iqr"] == pytest.approx(whole["share_D_q3"] - whole["share_D_q1"])
        assert set(so[so["size"] == "3x3"]["outcome"]) == {"correct_kept", "wrong_revised", "wrong_kept", "all"}
        assert so[(so["size"] == "3x4") & (so["outcome"] == "correct_changed")]["n"].tolist() == [1]
    assert "correct_kept" in ar.format_summary(s)
    # everything is now in the store: a second pass computes nothing
    again = attribute_dataset(rl, eps, store=store, ref=base)
    assert again.n_cached == 24 and again.n_computed == 0
    pd.testing.assert_frame_equal(again.frame.drop(columns="cached"), f.drop(columns="cached"))


def test_kl_skipped_with_a_note_without_a_reference(base, eps):
    ds = attribute_dataset(base, eps[:2], ["surrogate", "kl_k3", "kl_k1"], advantage=0.5)
    assert ds.objectives == ("surrogate",)
    assert set(ds.skipped_objectives) == {"kl_k3", "kl_k1"}
    assert any("skipped kl_k3, kl_k1" in n for n in ds.notes)
    assert any("names no parent" in n and "--ref" in n for n in ds.notes)
    assert list(ds.frame["objective"]) == ["surrogate", "surrogate"]
    assert (ds.frame["advantage"] == 0.5).all()
    ref, note = resolve_ref(base, None)
    assert ref is None and "no KL reference" in note


def test_parent_not_in_folder_and_explicit_ref(tmp_path, char_tokenizer, base, eps):
    d = tmp_path / "alone"
    save_checkpoint(
        d, init_model(char_tokenizer, "llama", seed=2, **TINY), char_tokenizer, Card(condition="x", parent=base.hash)
    )
    lone = load_checkpoint(d)
    ref, note = resolve_ref(lone, None)
    assert ref is None and base.hash in note and "not among" in note
    ds = attribute_dataset(lone, eps[:1], ["kl_k1"], ref=base.path)
    assert ds.ref_hash == base.hash and len(ds.frame) == 1


def test_dataset_from_a_stored_run(rl, eps, store, monkeypatch):
    key = run_key(rl.hash, "3x3@test-v1", 3, SamplingConfig(), 0)
    store.put_run(key, eps[:3])
    ds = attribute_dataset(rl, key, ["sft_sum"], store=store)
    assert list(ds.frame["size"]) == ["3x3"] * 3 and list(ds.frame["episode"]) == [0, 1, 2]
    monkeypatch.setattr(attribution_cache, "attribute", _raise)
    by_digest = attribute_dataset(rl, {"mine": key.digest()}, ["sft_sum"], store=store)
    assert by_digest.n_cached == 3 and set(by_digest.frame["size"]) == {"mine"}
    with pytest.raises(ValueError, match="no stored run"):
        attribute_dataset(rl, "0" * 64, ["sft_sum"], store=store)
    with pytest.raises(ValueError, match="store"):
        attribute_dataset(rl, key, ["sft_sum"])


def test_parse_objectives():
    assert parse_objectives(None) == DEFAULT_OBJECTIVES
    assert parse_objectives("kl_k3, sft_sum,kl_k3") == ("kl_k3", "sft_sum")
    for bad, word in (("kl_k3,nope", "nope"), ("", "no objectives"), (",", "no objectives")):
        with pytest.raises(ValueError, match=word):
            parse_objectives(bad)


def test_zero_gradient_is_an_error_not_a_number(rl, eps):
    with pytest.raises(AttributionError, match="zero"):
        attribute_dataset(rl, eps[:1], ["kl_k3"], ref=rl)  # a KL k3 against itself: |G| = 0


# ------------------------------------------------------------------------------- the command
def _cli(capsys, *args):
    rc = main(["attribute", *args])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def test_cli_end_to_end_from_the_store(ckpts, rl, base, tok_eps_3x3, tmp_path, capsys, monkeypatch):
    data, out = tmp_path / "data", tmp_path / "res.csv"
    store = ResultsStore(data)
    key = run_key(rl.hash, "3x3@test-v1", 2, SamplingConfig(), 0)
    store.put_run(key, tok_eps_3x3)
    monkeypatch.setattr(ev, "rollout", _raise)  # the run is read from the store
    args = [
        "--checkpoint",
        str(ckpts / "rl"),
        "--n",
        "2",
        "--sizes",
        "3x3",
        "--data-dir",
        str(data),
        "--objectives",
        "surrogate,kl_k3,sft_sum",
        "--out",
        str(out),
        "--quiet",
    ]
    rc, stdout, err = _cli(capsys, *args)
    assert rc == 0, err
    assert "6 attributions computed, 0 from the store" in stdout
    assert "correct_kept" in stdout and "wrong_revised" in stdout and "parent" in stdout
    f = pd.read_csv(out)
    assert tuple(f.columns) == FRAME_COLUMNS and len(f) == 6
    assert set(f["objective"]) == {"surrogate", "kl_k3", "sft_sum"}
    fig = attribute(rl, tok_eps_3x3[1], "kl_k3", ref_model=base, norms=False).figures
    got = f[(f["objective"] == "kl_k3") & (f["episode"] == 1)].iloc[0]
    assert got["ratio_SD"] == pytest.approx(fig.ratio_SD, rel=1e-9)
    monkeypatch.setattr(attribution_cache, "attribute", _raise)  # second run: every result from the store
    rc, stdout, err = _cli(capsys, *args)
    assert rc == 0, err
    assert "0 attributions computed, 6 from the store" in stdout


@pytest.fixture(scope="module")
def tok_eps_3x3(char_tokenizer):
    p, q = fixed_test_set("3x3")[:2]
    return [make(char_tokenizer, p, [right(p)]), make(char_tokenizer, q, [wrong(q), right(q)])]


def test_cli_samples_the_run_when_missing(ckpts, base, tmp_path, capsys):
    data, out = tmp_path / "data", tmp_path / "res.csv"
    rc, stdout, err = _cli(
        capsys,
        "--checkpoint",
        str(ckpts / "base"),
        "--n",
        "2",
        "--sizes",
        "3x3",
        "--data-dir",
        str(data),
        "--objectives",
        "sft_sum,kl_k1",
        "--out",
        str(out),
        "--quiet",
        "--max-new-tokens",
        "40",
    )
    assert rc == 0, err
    assert "note: skipped kl_k1" in stdout and "objectives: sft_sum;" in stdout
    runs = ResultsStore(data).list_runs(base.hash)
    assert len(runs) == 1 and runs[0].n_episodes == 2
    assert tuple(pd.read_csv(out).columns) == FRAME_COLUMNS


@pytest.mark.parametrize("case", ["missing", "objective", "sizes", "ref", "kl_only", "out", "n0"])
def test_cli_errors_exit_2_with_one_line(case, ckpts, tmp_path, capsys):
    args = {"--checkpoint": str(ckpts / "base"), "--sizes": "3x3", "--n": "2", "--data-dir": str(tmp_path / "data")}
    word = {
        "missing": "does not exist",
        "objective": "unknown objective",
        "sizes": "cannot read size",
        "ref": "does not exist",
        "kl_only": "no KL reference",
        "out": "--out",
        "n0": "--n",
    }[case]
    if case == "missing":
        args["--checkpoint"] = str(tmp_path / "nope")
    elif case == "objective":
        args["--objectives"] = "surrogate,klk3"
    elif case == "sizes":
        args["--sizes"] = "3xfoo"
    elif case == "ref":
        args["--ref"] = str(tmp_path / "no-ref")
    elif case == "kl_only":
        args["--objectives"] = "kl_k3"
    elif case == "out":
        args["--out"] = str(tmp_path / "no" / "such" / "dir.csv")
    elif case == "n0":
        args["--n"] = "0"
    rc, out, err = _cli(capsys, *[x for kv in args.items() for x in kv], "--quiet")
    assert_clean_cli_error(rc, out, err, word)
    assert not (tmp_path / "data" / "results.sqlite").exists()


def test_cli_argparse_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as ei:
        main(["attribute"])  # --checkpoint is required
    assert ei.value.code == 2
    with pytest.raises(SystemExit) as ei:
        main(["attribute", "--checkpoint", "x", "--jvp-method", "magic"])
    assert ei.value.code == 2
    capsys.readouterr()
