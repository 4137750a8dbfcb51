"""The calibration page's service (ui.services.calibration, ui.services.calibration_views) and its charts
(ui.charts.calibration): hand-computed cases, eval.json as a source, agreement with
ds_core.analysis.evaluate and the store."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from types import SimpleNamespace as NS

import pytest

from ds_core.analysis.metrics import calibration
from ds_core.episodes.tasks import TaskError, TaskSpec, task_size
from ds_core.models.checkpoint import CheckpointError
from ds_core.store import ResultsStore, StoreError
from ui.services.calibration import (
    CalibrationInputError,
    Settings,
    checkpoint_ref,
    gather,
    parse_size_list,
    report_row,
    run_key_for,
    size_axis_title,
    task_name,
)
from ui.services.calibration_compute import compute_missing, measured_seconds, missing_episodes
from ui.services.calibration_views import calibration_long, paper_frame, percent_view, predicted_observed, table1_frame

REPO = Path(__file__).resolve().parents[2]

SHIPPED = REPO / "checkpoints"
SIZES = ("3x3", "3x4", "3x5", "3x6", "3x7", "3x8", "3x9")


def _ep(*attempts):
    """attempts: (correct, verdict or None) in order; the episode's answer is the last attempt's."""
    atts = tuple(NS(index=i, correct=c) for i, (c, _) in enumerate(attempts))
    decs = tuple(NS(index=i, verdict=v) for i, (_, v) in enumerate(attempts) if v)
    return NS(attempts=atts, decisions=decs, correct=attempts[-1][0], malformed=False)


# four episodes: p_s = 1/4; correct attempts decided 3, all STOP; wrong decided 4, 3 RESAMPLE
EPISODES = [
    _ep((True, "STOP")),
    _ep((False, "RESAMPLE"), (True, "STOP")),
    _ep((False, "STOP")),
    _ep((False, "RESAMPLE"), (False, "RESAMPLE"), (True, "STOP")),
]


# --- the request -----------------------------------------------------------------------------------
def test_sampling_key_and_run_key_match_evaluate():
    from ds_core.analysis.evaluate import problems_for, run_key
    from ds_core.models.sampling import SamplingConfig

    for kw in ({}, {"temperature": 0.5}, {"temperature": 0.0, "max_attempts": 2}, {"top_p": 0.9, "max_new_tokens": 40}):
        s = Settings(n=7, seed=3, **kw)
        cfg = SamplingConfig(**kw)
        assert s.sampling_key() == cfg.key()
        assert s.sampling_config() == cfg
        for size, n in (("3x3", 7), ("3x9", 100), ("3x3", 101), ("3x10", 5), ("2+3", 4)):
            spec = TaskSpec.parse(size)
            task, _ = problems_for(spec, n, 3)
            assert task_name(spec, n, 3) == task
            s2 = Settings(n=n, seed=3, **kw)
            assert run_key_for("abc", spec, s2).digest() == run_key("abc", task, n, cfg, 3).digest()


@pytest.mark.parametrize(
    "kw",
    [
        {"n": 0},
        {"n": 1001},
        {"n": True},
        {"n": 2.5},
        {"seed": -1},
        {"temperature": -0.1},
        {"temperature": 101},
        {"top_p": 0},
        {"max_attempts": 0},
        {"max_new_tokens": 0},
    ],
)
def test_settings_refuse_bad_values(kw):
    with pytest.raises(CalibrationInputError) as e:
        Settings(**kw)
    assert isinstance(e.value, TaskError)  # shown by ui.common.user_errors as a message


def test_parse_size_list():
    assert [s.name for s in parse_size_list("3x3-3x5, 3x4, 3x10")] == ["3x3", "3x4", "3x5", "3x10"]
    # sorted by shape however typed: a 2x2 typed last is plotted first, not after 3x9
    assert [s.name for s in parse_size_list("3x3-3x5, 2x2, 1+1")] == ["2x2", "3x3", "3x4", "3x5", "1+1"]
    assert size_axis_title(["3x3", "3x9"]) == "size (3-digit × n-digit)"
    assert size_axis_title(["2x2", "3x9"]) == "size (digits × digits)"
    for bad in ("", " , ", "3x99", "abc", "3x9-3x3", "1x1-1x12, 2x1-2x12"):
        with pytest.raises(TaskError):
            parse_size_list(bad)


# --- rows from a report ----------------------------------------------------------------------------
def test_report_row_hand_computed():
    rep = json.loads(json.dumps(calibration(EPISODES, n_boot=50, seed=0).to_dict()))
    row = report_row(rep)
    assert (row["n"], row["k"]) == (4, 3)
    assert row["accuracy"] == 0.75 and row["observed"] == 0.75
    h = 1.96 * math.sqrt(0.75 * 0.25 / 4)
    assert row["wald_lo"] == pytest.approx(0.75 - h) and row["wald_hi"] == 1.0
    assert row["p_s"] == 0.25 and (row["p_s_k"], row["p_s_n"]) == (1, 4)
    assert row["p_dC"] == 1.0 and (row["p_dC_k"], row["p_dC_n"]) == (3, 3)
    assert row["p_dW"] == 0.75 and (row["p_dW_k"], row["p_dW_n"]) == (3, 4)
    # 0.25 * 1 / (1 - [0.25 * 0 + 0.75 * 0.75]) = 0.25 / 0.4375 = 4/7
    assert row["predicted"] == pytest.approx(4 / 7)
    assert row["mean_attempts"] == 7 / 4
    for q in ("p_s", "p_dC", "p_dW", "predicted", "observed"):
        assert row[f"{q}_lo"] <= row[q] + 1e-12 <= row[f"{q}_hi"] + 2e-12


def test_report_row_undefined_values_are_nan():
    rep = json.loads(json.dumps(calibration([_ep((False, "STOP"))], n_boot=10).to_dict()))
    row = report_row(rep)
    assert math.isnan(row["p_dC"]) and math.isnan(row["p_dC_lo"])  # no correct attempt
    assert row["p_dW"] == 0.0 and row["predicted"] == 0.0


# --- eval.json as a source ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def shipped_refs():
    return [checkpoint_ref(n, SHIPPED / n) for n in ("base", "sft", "sft_reflection", "rl")]


def test_shipped_checkpoints_served_from_eval_json(shipped_refs, tmp_path):
    store = ResultsStore(tmp_path / "data")  # empty, like a fresh clone
    grid = gather(shipped_refs, parse_size_list("3x3-3x9"), Settings(), store)
    assert grid.counts() == {"store": 0, "computed": 0, "eval.json": 28, "missing": 0}
    assert not grid.missing and missing_episodes(grid) == 0
    f = grid.frame
    for ref in shipped_refs:
        ev = json.loads((Path(ref.path) / "eval.json").read_text())["sizes"]
        assert ref.paper_condition == ref.label
        for size in SIZES:
            r = f[(f.checkpoint == ref.label) & (f["size"] == size)].iloc[0]
            e = ev[size]
            assert r["accuracy"] == e["accuracy"]["p"] and r["k"] == e["accuracy"]["k"]
            assert (r["wald_lo"], r["wald_hi"]) == tuple(e["accuracy"]["wald"])
            for q in ("p_s", "p_dW", "predicted"):
                for got, want in ((r[q], e[q]["value"]), (r[f"{q}_lo"], e[q]["ci"][0])):
                    assert (want is None and math.isnan(got)) or got == pytest.approx(want)
    rl33 = f[(f.checkpoint == "rl") & (f["size"] == "3x3")].iloc[0]
    assert (rl33["p_s"], rl33["p_dW"], rl33["paper_accuracy"]) == (0.85, 1.0, 0.98)
    t1 = table1_frame(f, ["rl"], "wald", list(SIZES)).set_index("row")
    assert t1.at["base", "3x3"] == "93 (88–98)"  # RESULTS.md's Table 1
    assert t1.at["rl", "3x4"] == "99 (97–100)"
    assert t1.at["paper: RL", "3x9"] == "34" and t1.at["rl", "source"] == "eval.json"
    wil = table1_frame(f, [], "wilson", list(SIZES)).set_index("row")
    assert wil.at["base", "3x3"] == "93 (86–97)"
    with pytest.raises(ValueError):
        table1_frame(f, [], "agresti")


def test_eval_json_used_only_when_the_request_matches(shipped_refs, tmp_path):
    rl = [r for r in shipped_refs if r.label == "rl"]
    sizes = parse_size_list("3x3")
    for s in (Settings(n=50), Settings(seed=1), Settings(temperature=0.5), Settings(max_attempts=2)):
        g = gather(rl, sizes, s, None)
        assert g.missing == (("rl", "3x3"),) and g.frame["source"].tolist() == ["missing"]
        assert math.isnan(g.frame["accuracy"].iloc[0])
    assert gather(rl, parse_size_list("3x10"), Settings(), None).missing == (("rl", "3x10"),)
    # a copy has the same content hash: served; an eval.json of other weights is not
    copy = tmp_path / "rl_copy"
    shutil.copytree(SHIPPED / "rl", copy)
    ref = checkpoint_ref("copy", copy)
    assert ref.hash == rl[0].hash and ref.paper_condition == "rl"  # from the card
    assert gather([ref], sizes, Settings(), None).frame["source"].tolist() == ["eval.json"]
    ev = json.loads((copy / "eval.json").read_text())
    ev["checkpoint_hash"] = "0" * 16
    (copy / "eval.json").write_text(json.dumps(ev))
    assert gather([ref], sizes, Settings(), None).frame["source"].tolist() == ["missing"]
    (copy / "eval.json").write_text("{not json")
    assert gather([ref], sizes, Settings(), None).frame["source"].tolist() == ["missing"]


def test_checkpoint_ref_refuses_a_non_checkpoint(tmp_path):
    with pytest.raises(CheckpointError):
        checkpoint_ref("x", tmp_path / "nope")
    with pytest.raises(CheckpointError):
        checkpoint_ref("x", tmp_path)


def test_unreadable_store_falls_back_to_eval_json(shipped_refs):
    class Broken:
        def list_runs(self, *a, **k):
            raise StoreError("disk on fire")

    g = gather(shipped_refs[:2], parse_size_list("3x3"), Settings(), Broken())
    assert g.frame["source"].tolist() == ["eval.json", "eval.json"]
    assert len(g.notes) == 1 and "disk on fire" in g.notes[0]


# --- the store and ds_core.analysis.evaluate ----------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, char_tokenizer):
    from ds_core.models.checkpoint import Card, save_checkpoint
    from ds_core.models.model import init_model

    d = tmp_path_factory.mktemp("cal") / "tiny"
    save_checkpoint(
        d,
        init_model(char_tokenizer, "llama", seed=0, hidden=32, layers=2, heads=2),
        char_tokenizer,
        Card(condition="tiny"),
    )
    return d


def test_computed_runs_agree_with_evaluate_and_beat_eval_json(tiny_dir, tmp_path):
    from ds_core.analysis.evaluate import evaluate
    from ds_core.models.checkpoint import load_checkpoint

    store = ResultsStore(tmp_path / "data")
    settings = Settings(n=5, seed=2, max_new_tokens=40)
    sizes = parse_size_list("3x3, 3x10")
    ref = checkpoint_ref("tiny", tiny_dir)
    assert ref.paper_condition is None
    # an eval.json that answers 3x3 (with made-up numbers): served until the store has the run
    fake = json.loads((SHIPPED / "rl" / "eval.json").read_text())
    fake.update(checkpoint_hash=ref.hash, seed=2, sampling={**settings.sampling_key(), "batch_size": 256})
    fake["sizes"] = {"3x3": {**fake["sizes"]["3x3"], "n": 5}}
    fake["sizes"]["3x3"]["accuracy"] = {"k": 5, "n": 5, "p": 1.0, "wald": [1, 1], "wilson": [0.5, 1]}
    (tiny_dir / "eval.json").write_text(json.dumps(fake))
    try:
        g = gather([ref], sizes, settings, store)
        assert g.frame["source"].tolist() == ["eval.json", "missing"]
        assert g.missing == (("tiny", "3x10"),)
        # a fresh request: nothing of it in the store, so both cells are sampled
        g = gather([ref], sizes, Settings(n=5, seed=2, max_new_tokens=40, temperature=0.7), store)
        assert len(g.missing) == 2
        assert measured_seconds(g, store) == (None, ("tiny",))  # nothing timed yet: no estimate
        calls, loads = [], []

        def load(path):
            loads.append(path)
            return load_checkpoint(path)

        digests = compute_missing(g, load, store, lambda d, t, lab: calls.append((d, t, lab)))
        assert loads == [ref.path] and len(digests) == 2
        assert calls[-1] == (10, 10, "tiny") and [c[0] for c in calls] == sorted(c[0] for c in calls)
        g2 = gather([ref], sizes, g.settings, store, computed=digests)
        assert g2.frame["source"].tolist() == ["computed", "computed"] and not g2.missing
        g3 = gather([ref], sizes, g.settings, store)
        assert g3.frame["source"].tolist() == ["store", "store"]
        # the estimate for another request is the stored runs' seconds per episode, size by size
        g4 = gather([ref], sizes, Settings(n=3, seed=9, max_new_tokens=40), store)
        walls = {task_size(r.key.task_spec): r.wall_s / r.n_episodes for r in store.list_runs(ref.hash)}
        secs, untimed = measured_seconds(g4, store)
        assert untimed == () and secs == pytest.approx(3 * (walls["3x3"] + walls["3x10"]))
        # numbers equal a fresh ds_core.analysis.evaluate of the same request (sampled again, no store)
        res = evaluate(load_checkpoint(tiny_dir), sizes, n=5, cfg=g.settings.sampling_config(), seed=2, store=None)
        for sr in res.sizes:
            want = sr.row()
            got = g3.frame[g3.frame["size"] == sr.spec].iloc[0]
            for c in (
                "n",
                "accuracy",
                "wald_lo",
                "wald_hi",
                "wilson_lo",
                "wilson_hi",
                "p_s",
                "p_s_lo",
                "p_s_hi",
                "p_dC",
                "p_dW",
                "p_dW_hi",
                "predicted",
                "predicted_lo",
                "predicted_hi",
                "mean_attempts",
            ):
                a, b = want[c], got[c]
                assert (pd_isna(a) and pd_isna(b)) or a == pytest.approx(b), c
        # the store beats eval.json once the run is there
        g = gather([ref], sizes[:1], settings, store)
        assert g.frame["source"].tolist() == ["eval.json"] and g.frame["k"].iloc[0] == 5
        digests = compute_missing(_with_missing(g), load_checkpoint, store)
        r = gather([ref], sizes[:1], settings, store).frame.iloc[0]
        assert r["source"] == "store" and len(digests) == 1
        assert r["accuracy"] == store.get_run(next(iter(digests))).summary["accuracy"]["p"]
    finally:
        (tiny_dir / "eval.json").unlink()


def pd_isna(x) -> bool:
    import pandas as pd

    return bool(pd.isna(x))


def _with_missing(grid):
    """The grid with every cell marked missing (to force computing a cell eval.json answers)."""
    from dataclasses import replace

    return replace(grid, missing=tuple(zip(grid.frame["checkpoint"], grid.frame["size"])))


def test_compute_missing_with_nothing_missing_loads_nothing(shipped_refs, tmp_path):
    g = gather(shipped_refs[:1], parse_size_list("3x3"), Settings(), None)

    def load(path):
        raise AssertionError("no model should be loaded")

    assert compute_missing(g, load, ResultsStore(tmp_path / "d")) == frozenset()
    with pytest.raises(StoreError):
        compute_missing(g, load, None)


# --- views -----------------------------------------------------------------------------------------
def test_paper_frame():
    p = paper_frame(["rl", "nope", "base"], ["3x9", "3x10", "3x3"])
    assert p["label"].tolist() == ["paper: RL", "paper: RL", "paper: Base", "paper: Base"]
    rl39 = p.iloc[0]
    h = 1.96 * math.sqrt(0.34 * 0.66 / 100)
    assert rl39["accuracy"] == 0.34 and rl39["wald_lo"] == pytest.approx(0.34 - h)
    assert rl39["wald_hi"] == pytest.approx(0.34 + h) and rl39["n"] == 100
    assert paper_frame([]).empty


def test_long_views(shipped_refs):
    g = gather(shipped_refs[2:], parse_size_list("3x3, 3x6, 3x10"), Settings(), None)
    long = calibration_long(g.frame)
    assert len(long) == 2 * 2 * 3  # 3x10 is missing: left out
    sr = long[(long.checkpoint == "sft_reflection") & (long["size"] == "3x6")].set_index("quantity")
    assert sr.at["p_s", "value"] == 0.0 and math.isnan(sr.at["p_dC", "value"])  # undefined
    assert sr.at["p_dW", "value"] == pytest.approx(0.76, abs=0.005)  # RESULTS.md
    po = predicted_observed(g.frame)
    assert len(po) == 4 and "3x10" not in set(po["size"])
    row = po[(po.checkpoint == "sft_reflection") & (po["size"] == "3x3")].iloc[0]
    assert row["predicted_minus_observed"] == pytest.approx(row["predicted"] - row["observed"])
    pv = percent_view(g.frame)
    assert pv["accuracy %"].iloc[0] == 94.0 and "p_dW_hi %" in pv


# --- charts ----------------------------------------------------------------------------------------
def test_charts(shipped_refs):
    from ui.charts.calibration import accuracy_figure, calibration_figure, colour_map, predicted_observed_figure

    g = gather(shipped_refs[2:], parse_size_list("3x3-3x9"), Settings(), None)
    f = g.frame
    fig = accuracy_figure(f, paper_frame(["rl"]), "wald", list(SIZES))
    names = [t.name for t in fig.data]
    assert names == ["sft_reflection", "rl", "paper: RL"]
    rl, paper = fig.data[1], fig.data[2]
    assert paper.line.dash == "dash" and paper.line.color == rl.line.color
    assert rl.line.dash is None and rl.y[0] == 1.0
    sr = f[f.checkpoint == "sft_reflection"]
    assert fig.data[0].error_y.array[0] == pytest.approx(sr["wald_hi"].iloc[0] - sr["accuracy"].iloc[0])
    assert fig.data[0].error_y.arrayminus[0] == pytest.approx(sr["accuracy"].iloc[0] - sr["wald_lo"].iloc[0])
    wil = accuracy_figure(f, None, "wilson", list(SIZES))
    assert wil.data[0].error_y.array[0] != fig.data[0].error_y.array[0]
    fig2 = calibration_figure(calibration_long(f), list(SIZES))
    assert len(fig2.data) == 3 * 2 and sum(t.showlegend for t in fig2.data) == 2
    p_dc = [t for t in fig2.data if t.xaxis == "x2"][0]
    assert p_dc.y[3] is None  # p_d|C undefined at 3x6: a gap
    fig3 = predicted_observed_figure(predicted_observed(f))
    assert fig3.data[0].name == "y = x" and list(fig3.data[0].x) == [0, 1]
    assert len(fig3.data) == 3 and list(fig3.data[1].text) == list(SIZES)
    # the square aspect shrinks the plot, not the range (it read -50 %..150 %); axes stay 0..100 %
    assert fig3.layout.xaxis.constrain == fig3.layout.yaxis.constrain == "domain"
    assert list(fig3.layout.xaxis.range) == list(fig3.layout.yaxis.range) == [-0.04, 1.06]
    # points on top of each other (OOD sizes all near 0) label to different sides
    pts = [(x, y) for t in fig3.data[1:] for x, y in zip(t.x, t.y) if x is not None and y is not None]
    pos = [p for t in fig3.data[1:] for p, x, y in zip(t.textposition, t.x, t.y) if x is not None and y is not None]
    close = [
        (i, j)
        for i in range(len(pts))
        for j in range(i)
        if abs(pts[i][0] - pts[j][0]) + abs(pts[i][1] - pts[j][1]) < 0.01
    ]
    assert close and any(pos[i] != pos[j] for i, j in close)
    assert fig2.layout.xaxis2.title.text == "size (3-digit × n-digit)"
    typed = calibration_figure(calibration_long(f), ["2x2", *SIZES])
    assert typed.layout.xaxis2.title.text == "size (digits × digits)"
    assert colour_map(["a", "b", "a"]) == {"a": colour_map(["a"])["a"], "b": colour_map(["x", "b"])["b"]}
    empty = gather([], parse_size_list("3x3"), Settings(), None).frame
    for fig in (
        accuracy_figure(empty),
        calibration_figure(calibration_long(empty)),
        predicted_observed_figure(predicted_observed(empty)),
    ):
        assert len(fig.data) == 0 and fig.layout.annotations


def test_a_chat_model_is_calibrated_from_its_segmentation(tmp_path, chat_tokenizer):
    """A text-format (chat) checkpoint: its cells are sampled with the chat template and read by
    the segmentation (end of turn = STOP, answers by the readers). This one ends every turn at once,
    so every first attempt is empty and wrong and is kept: p_s = 0, p_d|W = 0, p_d|C undefined;
    the same numbers as ds_core.analysis.evaluate."""
    import math

    import torch

    from ds_core.analysis.evaluate import evaluate
    from ds_core.models.checkpoint import Card, load_checkpoint, save_checkpoint
    from ds_core.models.model import init_model

    model = init_model(chat_tokenizer, "qwen2", hidden=32, layers=1, heads=2)
    end = chat_tokenizer.convert_tokens_to_ids("<|im_end|>")
    with torch.no_grad():
        model.lm_head.weight[end] += 50 * model.lm_head.weight.abs().max()
    d = tmp_path / "chat"
    save_checkpoint(d, model, chat_tokenizer, Card(condition="chat"))
    store = ResultsStore(tmp_path / "data")
    settings = Settings(n=4, seed=0)
    sizes = parse_size_list("2x2")
    g = gather([checkpoint_ref("chat", d)], sizes, settings, store)
    assert g.missing == (("chat", "2x2"),)
    digests = compute_missing(g, load_checkpoint, store)
    row = gather([checkpoint_ref("chat", d)], sizes, settings, store, computed=digests).frame.iloc[0]
    assert row["source"] == "computed" and row["n"] == 4
    assert row["p_s"] == 0 and row["p_dW"] == 0 and math.isnan(row["p_dC"]) and row["accuracy"] == 0
    ep = store.load_episodes(
        evaluate(load_checkpoint(d), sizes, n=4, cfg=settings.sampling_config(), store=store).sizes[0].key
    )[0]
    assert [x.verdict for x in ep.decisions] == ["STOP"] and ep.attempts[0].answer is None


def test_prompt_settings_key_a_text_models_cells(tmp_path, chat_tokenizer, char_tokenizer):
    """Edited prompt settings apply to a text-format checkpoint: its cells are keyed by them (the
    default-prompt run is not served, nor eval.json), computed with the edited prompt, and equal
    the run evaluate() stores for the same customised checkpoint; a DS checkpoint ignores them."""
    from ds_core.analysis.evaluate import evaluate
    from ds_core.episodes.text_format import with_text_settings
    from ds_core.models.checkpoint import Card, load_checkpoint, save_checkpoint
    from ds_core.models.model import init_model

    d = tmp_path / "chat"
    save_checkpoint(d, init_model(chat_tokenizer, "qwen2", hidden=32, layers=1, heads=2), chat_tokenizer, Card("c"))
    fmt = (("instruction", "Compute {a} {word} {b}."),)
    store = ResultsStore(tmp_path / "data")
    settings = Settings(n=3, seed=0, max_new_tokens=8)
    sizes = parse_size_list("2x2")
    plain, edited = checkpoint_ref("chat", d), checkpoint_ref("chat", d, fmt)
    assert plain.fmt_key is None and edited.fmt_key["instruction"] == "Compute {a} {word} {b}."
    evaluate(load_checkpoint(d), sizes, n=3, cfg=settings.sampling_config(), store=store)  # the default prompt
    assert gather([plain], sizes, settings, store).frame["source"].tolist() == ["store"]
    g = gather([edited], sizes, settings, store)
    assert g.missing == (("chat", "2x2"),)
    digests = compute_missing(g, load_checkpoint, store)
    assert gather([edited], sizes, settings, store, computed=digests).frame["source"].tolist() == ["computed"]
    custom = with_text_settings(load_checkpoint(d), **dict(fmt))
    res = evaluate(custom, sizes, n=3, cfg=settings.sampling_config(), store=store)
    assert {s.key.digest() for s in res.sizes} == set(digests)
    ep = store.load_episodes(res.sizes[0].key)[0]
    assert "Compute" in chat_tokenizer.decode(list(ep.token_ids[: ep.prompt_len]))
    ds = tmp_path / "ds"
    save_checkpoint(ds, init_model(char_tokenizer, "llama", hidden=32, layers=1, heads=2), char_tokenizer, Card("d"))
    assert checkpoint_ref("ds", ds, fmt).fmt_key is None and checkpoint_ref("ds", ds, fmt).fmt == ()


def test_figure2_reading_says_what_the_numbers_show(shipped_refs):
    """The caption over Figure 2 is computed: pooled p_d|W beyond the training sizes, and the paper's
    pattern (RL >= 40 %, SFT with reflection <= 20 %) checked by that rule, never asserted."""
    from ui.services.calibration_views import figure2_reading, pooled

    g = gather(shipped_refs, parse_size_list("3x3-3x9"), Settings(), None)
    lines = figure2_reading(g.frame)
    k, n = pooled(g.frame, "rl", [f"3x{b}" for b in range(5, 10)])
    assert f"rl {k}/{n} = {k / n:.0%}" in lines[0]
    sr = pooled(g.frame, "sft_reflection", [f"3x{b}" for b in range(5, 10)])
    seen = k / n >= 0.4 and sr[0] / sr[1] <= 0.2
    assert ("do **not** show that pattern" in lines[1]) is not seen
    # the same rule flips when the numbers do: sft_reflection's wrong attempts all kept
    f = g.frame.copy()
    f.loc[f["checkpoint"] == "sft_reflection", "p_dW_k"] = 0
    assert "These checkpoints show that pattern" in figure2_reading(f)[1] or k / n < 0.4
    below = figure2_reading(gather(shipped_refs[:1], parse_size_list("1x1, 3x3"), Settings(), None).frame)
    assert any("smaller than the fine-tuning sizes" in x for x in below)
