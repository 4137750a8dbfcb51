"""Real-browser tooling: start the app with `streamlit run`, drive Debian's chromium with
Playwright. Used by tests/e2e/test_browser.py and by `make screenshots` (README images).

Never `playwright install`: the browser is Debian's (`apt-get install chromium`; .ci/run does it).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser"):
        p = shutil.which(name)
        if p:
            return p
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def app_server(data_dir: Path, port: int | None = None, timeout: float = 90.0):
    """`streamlit run app.py` on a free port with its own results store; yields (url, seconds to
    healthy). The server log is printed if it fails to start."""
    port = port or free_port()
    from ui.serve import command, environment  # exactly `make app`'s settings

    env = environment(dict(os.environ, DS_LENS_DATA=str(data_dir)))
    log = open(Path(data_dir).parent / f"streamlit-{port}.log", "w+")
    cmd = command(port, "127.0.0.1")
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        while True:
            try:
                with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.perf_counter() - t0 > timeout:
                log.seek(0)
                raise RuntimeError(f"streamlit did not start:\n{log.read()[-4000:]}")
            time.sleep(0.2)
        yield url, time.perf_counter() - t0
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@contextmanager
def browser_page(width: int = 1400, height: int = 1000):
    from playwright.sync_api import sync_playwright

    exe = chromium_path()
    if exe is None:
        raise RuntimeError("no chromium on PATH (apt-get install chromium)")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            yield page
        finally:
            browser.close()


STATUS = '[data-testid="stStatusWidget"]'  # Streamlit's "Running..." indicator
_BUSY_JS = (
    "() => !!document.querySelector('[data-testid=\"stStatusWidget\"]') || "
    "document.querySelectorAll('[data-stale=\"true\"]').length > 0"
)


def wait_idle(page, timeout_ms: int = 120_000, quiet_ms: int = 1_000) -> None:
    """Wait for the script run that a click or navigation started to finish. A run shows stale
    elements at once and the running indicator after ~0.5 s; done = it was seen busy and is no
    longer, or it never looked busy within `quiet_ms` (a quick run)."""
    t0 = time.perf_counter()
    seen = False
    while (time.perf_counter() - t0) * 1000 < timeout_ms:
        busy = page.evaluate(_BUSY_JS)
        if busy:
            seen = True
        elif seen or (time.perf_counter() - t0) * 1000 > quiet_ms:
            return
        page.wait_for_timeout(50)
    raise TimeoutError(f"the app was still running after {timeout_ms / 1000:.0f} s")
