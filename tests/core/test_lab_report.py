"""The lab report: pooled out-of-distribution counts, the verdict rule (seed ranges), verdicts that
change when the numbers do, the generated RESULTS.md section, and the lab index matching the plan."""

from __future__ import annotations

import math

import pytest

from ds_core.analysis.lab_report import BEGIN, END, LabResults, SeedRun, compare, lab_markdown, verdicts, write_section
from ds_core.episodes.tasks import TEST_SET_SIZES
from ds_core.training import lab
from ds_core.training.lab_index import CONDITION_ORDER, lab_runs


def _counts(acc: float, p_dW: float, n: int = 100) -> dict:
    c = {}
    for s in TEST_SET_SIZES:
        k = round(acc * n)
        wrong = n - k
        c[s] = {
            "n": n,
            "first_correct": k,
            "correct_stop": k,
            "correct_decided": k,
            "wrong_resample": round(p_dW * wrong),
            "wrong_decided": wrong,
            "final_correct": k,
        }
    return c


def _res(spec: dict, logs: dict | None = None) -> LabResults:
    r = LabResults()
    for cond, seeds in spec.items():
        for i, (acc, pdw) in enumerate(seeds):
            log = tuple((logs or {}).get(cond, [()] * len(seeds))[i])
            r.runs.setdefault(cond, {})[i] = SeedRun(cond, i, _counts(acc, pdw), "test", log)
    return r


def test_pooled_counts_by_hand():
    run = SeedRun("rl", 0, {"3x5": {"final_correct": 3, "n": 10}, "3x6": {"final_correct": 1, "n": 30}}, "t")
    assert run.kn("accuracy", ["3x5", "3x6"]) == (4, 40) and run.value("accuracy", ["3x5", "3x6"]) == 0.1
    assert math.isnan(run.value("accuracy", ["3x9"]))


def test_the_rule_reads_seed_ranges():
    res = _res({"rl": [(0.3, 0.5), (0.35, 0.5), (0.4, 0.5)], "sft_reflection": [(0.1, 0.5), (0.2, 0.5), (0.25, 0.5)]})
    assert compare(res, "rl", "sft_reflection", "accuracy", ["3x5"])[0] == "supported"
    assert compare(res, "sft_reflection", "rl", "accuracy", ["3x5"])[0] == "contradicted"
    res = _res({"rl": [(0.3, 0.5), (0.35, 0.5), (0.4, 0.5)], "sft_reflection": [(0.1, 0.5), (0.2, 0.5), (0.31, 0.5)]})
    assert compare(res, "rl", "sft_reflection", "accuracy", ["3x5"])[0] == "cannot tell"  # ranges overlap
    assert compare(res, "rl", "absent", "accuracy", ["3x5"])[0] == "cannot tell"


def test_verdicts_change_with_the_numbers():
    base = {
        "rl": [(0.3, 0.8), (0.32, 0.8), (0.34, 0.8)],
        "sft_reflection": [(0.1, 0.4), (0.12, 0.4), (0.14, 0.4)],
        "rl_sampling_only": [(0.1, 0.4), (0.11, 0.4), (0.12, 0.4)],
        "reflection_balanced": [(0.1, 0.6), (0.1, 0.62), (0.1, 0.64)],
        "rl_no_kl": [(0.5, 0.8), (0.52, 0.8), (0.54, 0.8)],
        "rl_strong_kl": [(0.2, 0.8), (0.22, 0.8), (0.24, 0.8)],
    }
    logs = {"rl": [[{"split_ratio_SD": 5.0}]] * 3, "sft_reflection": [[{"split_ratio_SD": 50.0}]] * 3}
    got = {v.claim: v.verdict for v in verdicts(_res(base, logs))}
    assert set(got.values()) == {"supported"}, got
    flipped = dict(base, rl=[(0.01, 0.1), (0.02, 0.1), (0.03, 0.1)])
    flipped_logs = {"rl": [[{"split_ratio_SD": 500.0}]] * 3, "sft_reflection": logs["sft_reflection"]}
    got2 = {v.claim: v.verdict for v in verdicts(_res(flipped, flipped_logs))}
    changed = [c for c in got if got[c] != got2[c]]
    assert len(changed) == 4 and all(got2[c] == "contradicted" for c in changed)
    # Theorem 3.2's second half is only read when the KL measurably restrains p_s
    no_effect = dict(base, rl_strong_kl=base["rl_no_kl"])
    got3 = {v.claim: v.verdict for v in verdicts(_res(no_effect, logs))}
    half = [c for c in got3 if "other half" in c][0]
    assert got3[half] == "cannot tell" and got[half] == "supported"
    md = lab_markdown(_res(base, logs))
    assert "| rl | 3 |" in md and "**supported**" in md and "Rules:" in md


def test_write_section_replaces_only_its_block(tmp_path):
    p = tmp_path / "R.md"
    p.write_text("# hand-written\n\nkeep me\n")
    write_section(p, "first\n")
    write_section(p, "second\n")
    text = p.read_text()
    assert text.startswith("# hand-written\n\nkeep me\n") and text.count(BEGIN) == 1 and END in text
    assert "second" in text and "first" not in text


def test_index_matches_the_plan(tmp_path):
    assert tuple(lab.CONDITIONS) == CONDITION_ORDER
    (tmp_path / "rl" / "seed1").mkdir(parents=True)
    (tmp_path / "rl" / "seed0").mkdir()
    (tmp_path / "rl" / "notes").mkdir()
    (tmp_path / "unknown" / "seed0").mkdir(parents=True)
    runs = lab_runs(tmp_path)
    assert [(r.condition, r.seed, r.label, r.has_weights) for r in runs] == [
        ("rl", 0, "lab/rl", False),
        ("rl", 1, "lab/rl · seed 1", False),
    ]


@pytest.mark.parametrize("bad", ["x", "1,-2", ""])
def test_cli_seed_lists_are_checked(bad):
    from ds_core.cli.lab import int_list

    with pytest.raises(ValueError, match="--seeds"):
        int_list(bad, "--seeds")
