"""The Training dynamics page (AppTest) on a smoke-trained lab: bands over seeds, each seed, the
gradient-split metrics, an empty lab and a broken log."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from ds_core.analysis.lab_dynamics import read_logs
from ds_core.training import lab_index
from ds_core.training.lab import run_lab

PAGE = str(Path(__file__).resolve().parents[2] / "pages" / "7_Training_dynamics.py")


@pytest.fixture(scope="module")
def smoke_lab(tmp_path_factory):
    out = tmp_path_factory.mktemp("lab")
    run_lab(out, conditions=["base", "sft", "sft_reflection", "rl"], seeds=(0, 1), workers=2, smoke=True, evaluate_n=2)
    return out


def _run(monkeypatch, root):
    monkeypatch.setattr(lab_index, "LAB_DIR", Path(root))
    return AppTest.from_file(PAGE, default_timeout=120).run()


def test_bands_over_seeds_then_each_seed(monkeypatch, data_dir, smoke_lab):
    at = _run(monkeypatch, smoke_lab)
    assert not at.exception and not at.error
    assert [s.value for s in at.subheader] == ["SFT stages", "RL stages (GRPO)"]
    dyn = read_logs(smoke_lab)
    tables = [d.value for d in at.dataframe]
    sft = tables[0]
    assert set(sft["condition"]) == {"sft", "sft_reflection"} and set(sft["seeds"]) == {2}
    want = dyn.bands[(dyn.bands.condition == "sft") & (dyn.bands.metric == "eval_p_s")]
    assert sorted(sft[sft.condition == "sft"]["step"]) == sorted(want["step"])
    at.toggle(key="dyn_seeds").set_value(True).run()
    assert not at.exception
    at.radio(key="dyn_family").set_value("Gradient split").run()
    at.selectbox(key="dyn_metric").set_value("split_ratio_SD").run()
    assert not at.exception and not at.error
    t = at.dataframe[0].value
    r = dyn.runs[(dyn.runs.condition == "sft") & (dyn.runs.metric == "split_ratio_SD")]
    got = t[t.condition == "sft"]
    assert got["highest seed"].max() == pytest.approx(r.value.max())


def test_empty_lab_says_how_to_train_it(monkeypatch, data_dir, tmp_path):
    at = _run(monkeypatch, tmp_path / "none")
    assert not at.exception
    assert any("python -m ds_core train lab" in i.value for i in at.info)


def test_a_broken_log_is_named_not_a_traceback(monkeypatch, data_dir, smoke_lab, tmp_path):
    root = tmp_path / "lab"
    shutil.copytree(smoke_lab, root)
    (root / "sft" / "seed1" / "train_log.json").write_text("{not json")
    at = _run(monkeypatch, root)
    assert not at.exception
    assert any("sft/seed1" in w.value for w in at.warning)


def test_pickers_list_lab_runs_with_weights_seed_zero_first(monkeypatch, data_dir, smoke_lab, tmp_path):
    from ui.common import checkpoint_choices

    root = tmp_path / "lab"
    shutil.copytree(smoke_lab, root)
    (root / "rl" / "seed1" / "model.safetensors").unlink()  # as in a fresh clone: no weights for seed 1
    monkeypatch.setattr(lab_index, "LAB_DIR", root)
    labels = [k for k in checkpoint_choices() if k.startswith("lab/")]
    assert labels[:2] == ["lab/base", "lab/sft"] and "lab/sft · seed 1" in labels
    assert "lab/rl" in labels and "lab/rl · seed 1" not in labels
    assert checkpoint_choices()["lab/rl"] == str(root / "rl" / "seed0")


def test_calibration_lab_section_aggregates_seeds(monkeypatch, data_dir, smoke_lab):
    from ui.services.calibration_lab import aggregate, lab_frame

    frame = lab_frame(smoke_lab)
    agg = aggregate(frame)
    one = frame[(frame.condition == "sft") & (frame["size"] == "3x3") & (frame.figure == "accuracy")]
    row = agg[(agg.condition == "sft") & (agg["size"] == "3x3") & (agg.figure == "accuracy")].iloc[0]
    assert row["seeds"] == len(one) == 2
    assert row["mean"] == pytest.approx(one.value.mean()) and row["highest seed"] == one.value.max()


def test_calibration_page_has_the_lab_section(monkeypatch, data_dir, smoke_lab):
    monkeypatch.setattr(lab_index, "LAB_DIR", Path(smoke_lab))
    page = str(Path(__file__).resolve().parents[2] / "pages" / "4_Calibration.py")
    at = AppTest.from_file(page, default_timeout=180).run()
    assert not at.exception
    assert any(s.value.startswith("DS lab") for s in at.subheader)
    at.multiselect(key="lab_conds").set_value(["sft", "rl"]).run()
    at.radio(key="lab_seeds").set_value("one by one").run()
    assert not at.exception
    t = at.dataframe[-1].value
    assert set(t["condition"]) == {"sft", "rl"} and set(t["seed"]) == {0, 1}


def test_hypothesis_page_adds_the_lab_verdicts(monkeypatch, data_dir, smoke_lab):
    from ds_core.analysis.lab_report import collect, verdicts

    monkeypatch.setattr(lab_index, "LAB_DIR", Path(smoke_lab))
    page = str(Path(__file__).resolve().parents[2] / "pages" / "6_Hypothesis.py")
    at = AppTest.from_file(page, default_timeout=180).run()
    assert not at.exception and not at.error
    text = " ".join(m.value for m in at.markdown)
    for v in verdicts(collect(smoke_lab, verify="none")):
        assert v.claim in text and v.numbers in text
