"""End to end in a real browser: Playwright drives Debian's chromium against `streamlit run app.py`.

Skips outside CI when chromium is not installed (`.ci/run` installs it); in CI a missing browser
fails. Set DS_LENS_SCREENSHOTS=<dir> to save a PNG of each page (`make screenshots` -> docs/).
Timings (server start, first render, each interaction) are printed and, with screenshots on,
written to <dir>/timings.json.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from browser import app_server, browser_page, chromium_path, wait_idle

pytestmark = pytest.mark.browser

if chromium_path() is None:
    if os.environ.get("CI"):
        raise RuntimeError("CI must run the browser test: chromium is missing (see .ci/run)")
    pytest.skip(
        "chromium is not installed (apt-get install chromium; .ci/run does this in CI)", allow_module_level=True
    )
pytest.importorskip("playwright.sync_api", reason="playwright is not installed (requirements.txt)")

SHOTS = os.environ.get("DS_LENS_SCREENSHOTS")


class Timer:
    def __init__(self):
        self.t: dict[str, float] = {}

    def measure(self, name, fn):
        t0 = time.perf_counter()
        out = fn()
        self.t[name] = round(time.perf_counter() - t0, 2)
        return out


def shot(page, name: str, anchor: str | None = None) -> None:
    """Save a viewport PNG (only with DS_LENS_SCREENSHOTS set), scrolled so `anchor` text is at the top."""
    if not SHOTS:
        return
    Path(SHOTS).mkdir(parents=True, exist_ok=True)
    if anchor:
        page.get_by_text(anchor, exact=True).first.evaluate("e => e.scrollIntoView({block: 'start'})")
        page.wait_for_timeout(1500)  # let plotly draw what scrolled into view
    page.screenshot(path=str(Path(SHOTS) / f"{name}.png"), full_page=False)


def goto(page, url: str, text: str, timeout_ms: int = 120_000) -> None:
    page.goto(url)
    page.get_by_text(text, exact=False).first.wait_for(timeout=timeout_ms)
    wait_idle(page, timeout_ms)


UPLOAD = Path(__file__).resolve().parents[1] / "data" / "uploads" / "good.csv"


def click_and_wait(page, button: str, text: str, timeout_ms: int = 180_000) -> None:
    """Click, wait for the run it starts to finish, then for `text` (timed by the caller)."""
    page.get_by_role("button", name=button, exact=True).click()
    wait_idle(page, timeout_ms)
    page.get_by_text(text, exact=False).first.wait_for(timeout=timeout_ms)


def click_text_and_wait(page, text: str, timeout_ms: int = 120_000) -> None:
    """Click a widget by its exact label text (a radio option, say) and wait for the rerun."""
    page.get_by_text(text, exact=True).first.click()
    wait_idle(page, timeout_ms)


def no_exceptions(page) -> None:
    assert page.locator('[data-testid="stException"]').count() == 0, "a traceback is on the page"


def test_app_end_to_end(tmp_path):
    timer = Timer()
    with app_server(tmp_path / "data") as (url, started), browser_page(height=1300) as page:
        timer.t["server start"] = round(started, 2)
        # Home
        timer.measure("home first render", lambda: goto(page, url, "The DS picture"))
        assert page.get_by_text("Checkpoints").first.is_visible()
        assert page.get_by_text("Results store").first.is_visible()
        page.locator('[data-testid="stDataFrame"]').first.wait_for(timeout=30_000)  # checkpoints (a canvas)
        no_exceptions(page)
        shot(page, "home")

        # Episode explorer: run an episode (cold: loads rl and its reference), then the counterfactual
        timer.measure("explorer first render", lambda: goto(page, url + "/Episode_explorer", "Run episode"))
        timer.measure(
            "explorer run episode (cold models)", lambda: click_and_wait(page, "Run episode", "Gradient attribution")
        )
        page.get_by_text("Decision tokens").first.wait_for(timeout=60_000)
        no_exceptions(page)
        shot(page, "episode_explorer", anchor="Gradient attribution")
        timer.measure(
            "explorer counterfactual", lambda: click_and_wait(page, "Force the opposite verdict", "forced at token")
        )
        no_exceptions(page)
        timer.measure(
            "explorer warm rerun (same episode)", lambda: click_and_wait(page, "Run episode", "Gradient attribution")
        )
        timer.measure("explorer warm view switch", lambda: click_text_and_wait(page, "alignment with G_D"))
        page.get_by_text("shaded by alignment with G_D").first.wait_for(timeout=30_000)
        no_exceptions(page)
        timer.measure("explorer norm view (per-token gradient norms)", lambda: click_text_and_wait(page, "norm"))
        page.get_by_text("shaded by norm").first.wait_for(timeout=60_000)
        no_exceptions(page)
        # the GRPO group view: this episode and the rollouts its advantage came from
        timer.measure(
            "explorer group view (9 episodes, 4 objectives)",
            lambda: (
                click_text_and_wait(page, "Compute the group view"),
                page.get_by_text("A group of 9 episodes").first.wait_for(timeout=120_000),
            ),
        )
        no_exceptions(page)
        shot(page, "explorer_group_view", anchor="The GRPO group (Theorem 3.1)")

        # Compare checkpoints: same prompt and seed through sft_reflection and rl, teacher-forced
        timer.measure("compare first render", lambda: goto(page, url + "/Compare_checkpoints", "Compare"))
        timer.measure("compare run", lambda: click_and_wait(page, "Compare", "Teacher-forced on one transcript"))
        page.get_by_text("attribution on the same transcript").first.wait_for(timeout=60_000)
        no_exceptions(page)
        shot(page, "compare_checkpoints", anchor="Teacher-forced on one transcript")
        timer.measure(
            "compare over a test set (3x3-3x5, 20 per size, cold store)",
            lambda: click_and_wait(page, "Compute (kept in the results store)", "Where the verdicts differ"),
        )
        no_exceptions(page)
        shot(page, "compare_test_set", anchor="Over a test set: every model's verdicts on one model's episodes")

        # Custom prompts: upload a file, run it, get the results table and downloads
        timer.measure("custom prompts first render", lambda: goto(page, url + "/Custom_prompts", "Run prompts"))
        page.locator('input[type="file"]').set_input_files(str(UPLOAD))
        page.get_by_text("good.csv").first.wait_for(timeout=60_000)
        wait_idle(page)
        timer.measure(
            "custom prompts run (5 rows x 2 checkpoints)",
            lambda: click_and_wait(page, "Run prompts", "Download results"),
        )
        page.get_by_text("Rows that do not parse (1)").first.wait_for(timeout=10_000)  # "not a problem"
        no_exceptions(page)
        shot(page, "custom_prompts")

        # Calibration: the shipped checkpoints' Table 1 on an empty store
        timer.measure("calibration first render", lambda: goto(page, url + "/Calibration", "Accuracy (Table 1)"))
        page.locator('[data-testid="stPlotlyChart"]').first.wait_for(timeout=60_000)
        no_exceptions(page)
        shot(page, "calibration", anchor="Accuracy (Table 1)")
        shot(page, "calibration_figure2", anchor="p_s, p_d|C, p_d|W vs size (Figure 2)")
        shot(page, "calibration_figure3", anchor="Predicted vs observed accuracy (Figure 3)")
        timer.measure("calibration warm interval switch", lambda: click_text_and_wait(page, "Wilson"))
        page.get_by_text("Wilson 95% interval").first.wait_for(timeout=30_000)
        no_exceptions(page)

        # Gradient balance: the toy (Figure 1) from its default controls
        timer.measure(
            "gradient balance first render", lambda: goto(page, url + "/Gradient_balance", "Gradient balance")
        )
        page.locator('[data-testid="stPlotlyChart"]').first.wait_for(timeout=60_000)
        no_exceptions(page)
        shot(page, "gradient_balance")
        timer.measure("gradient balance length sweep (first visit)", lambda: click_text_and_wait(page, "Length sweep"))
        page.get_by_text("Toy: ratio vs attempt length L").first.wait_for(timeout=60_000)
        no_exceptions(page)
        timer.measure("gradient balance back to the toy (warm)", lambda: click_text_and_wait(page, "Toy (Figure 1)"))
        no_exceptions(page)
        timer.measure("gradient balance GRPO group view (first visit)", lambda: click_text_and_wait(page, "GRPO group"))
        timer.measure(
            "gradient balance group of 16 attributed",
            lambda: (
                click_text_and_wait(page, "Compute the group view"),
                page.get_by_text("A group of 16 episodes").first.wait_for(timeout=120_000),
            ),
        )
        page.get_by_text("Group surrogate |G_S|/|G_D|").first.wait_for(timeout=30_000)
        no_exceptions(page)
        shot(page, "gradient_balance_group", anchor="Compute the group view")

        # Hypothesis: the paper's claims with computed verdicts
        timer.measure("hypothesis first render", lambda: goto(page, url + "/Hypothesis", "Theorem 3.1"))
        page.get_by_text("The evidence: Gradient balance").first.wait_for(timeout=30_000)
        no_exceptions(page)
        shot(page, "hypothesis")

        # Training dynamics: the DS lab's logged calibration and gradient split over steps
        timer.measure(
            "training dynamics first render", lambda: goto(page, url + "/Training_dynamics", "Training dynamics")
        )
        page.get_by_text("RL stages (GRPO)").first.wait_for(timeout=30_000)
        no_exceptions(page)
        shot(page, "training_dynamics", anchor="RL stages (GRPO)")

        # Home: a folder that is not a loadable checkpoint is refused with the loader's reason
        broken = tmp_path / "broken_ckpt"
        broken.mkdir()
        (broken / "config.json").write_text('{"model_type": "llama"}')
        goto(page, url, "The DS picture")
        box = page.get_by_placeholder("/path/to/model_dir")
        box.fill(str(broken))
        box.press("Enter")
        wait_idle(page)
        page.get_by_text("Not added").first.wait_for(timeout=60_000)
        no_exceptions(page)

        print("timings:", json.dumps(timer.t))
        if SHOTS:
            (Path(SHOTS) / "timings.json").write_text(json.dumps(timer.t, indent=2) + "\n")


def test_two_browser_sessions_at_once(tmp_path):
    """Two sessions share the cached models: both run an episode and a comparison at the same
    time and both get their results, with no traceback on either page."""
    from browser import CHROMIUM_ARGS
    from playwright.sync_api import sync_playwright

    with app_server(tmp_path / "data") as (url, _), sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS, headless=True)
        try:
            pages = [browser.new_context().new_page() for _ in range(2)]
            for p in pages:
                goto(p, url + "/Episode_explorer", "Run episode")
            for p in pages:  # both clicks before either run finishes
                p.get_by_role("button", name="Run episode", exact=True).click()
            for p in pages:
                wait_idle(p, 180_000)
                p.get_by_text("Decision tokens").first.wait_for(timeout=180_000)
                no_exceptions(p)
            for p in pages:
                goto(p, url + "/Compare_checkpoints", "Compare")
            for p in pages:
                p.get_by_role("button", name="Compare", exact=True).click()
            for p in pages:
                wait_idle(p, 180_000)
                p.get_by_text("attribution on the same transcript").first.wait_for(timeout=180_000)
                no_exceptions(p)
        finally:
            browser.close()


def test_toy_reset_puts_the_sliders_back(tmp_path):
    """'Reset toy settings to the defaults' in a real browser (AppTest cannot see the browser's
    own copy of a widget, which is what kept the sliders where they were): the KL-weight slider
    moved to its end comes back to 0.4, and the length sweep then says 'the defaults'."""

    def kl_weight(page) -> float:  # the first toy control
        return float(page.locator('[data-testid="stSlider"] input[type="range"]').first.input_value())

    with app_server(tmp_path / "data") as (url, _), browser_page(height=1300) as page:
        goto(page, url + "/Gradient_balance", "Reset toy settings to the defaults")
        assert kl_weight(page) == 0.4
        page.locator('[data-testid="stSlider"] input[type="range"]').first.focus()
        page.keyboard.press("End")
        wait_idle(page)
        assert kl_weight(page) == 2.0
        page.get_by_role("button", name="Reset toy settings to the defaults").click()
        wait_idle(page)
        page.wait_for_timeout(1500)  # a rerun the browser may still send with its old value
        wait_idle(page)
        assert kl_weight(page) == 0.4
        click_text_and_wait(page, "Length sweep")
        page.get_by_text("the defaults", exact=False).first.wait_for(timeout=60_000)
        no_exceptions(page)
