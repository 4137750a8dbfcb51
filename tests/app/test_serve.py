"""`make app`'s settings (ui/serve.py, .streamlit/config.toml), shared with the browser test."""

from __future__ import annotations

import tomllib
import urllib.request
from pathlib import Path

from ui.serve import ROOT, app_threads, command, environment


def test_threads_and_environment():
    assert [app_threads(c) for c in (1, 2, 4, 16)] == [1, 1, 2, 8]
    env = environment({"PATH": "/bin"})
    assert env["OMP_NUM_THREADS"] == str(app_threads()) == env["MKL_NUM_THREADS"]
    assert environment({"OMP_NUM_THREADS": "3"})["OMP_NUM_THREADS"] == "3"  # the user's choice wins
    cmd = command(8600, "127.0.0.1")
    assert cmd[1:4] == ["-m", "streamlit", "run"] and Path(cmd[4]) == ROOT / "app.py"
    assert cmd[-4:] == ["--server.port", "8600", "--server.address", "127.0.0.1"]


def test_config_turns_the_file_watcher_off():
    cfg = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert cfg["server"]["fileWatcherType"] == "none" and cfg["server"]["headless"] is True
    assert cfg["browser"]["gatherUsageStats"] is False


def test_the_browser_tests_server_is_make_apps(tmp_path):
    """tests/e2e/browser.app_server starts `command()` with `environment()` from the repository
    root (so it reads .streamlit/config.toml); the server answers."""
    import sys

    sys.path.insert(0, str(ROOT / "tests" / "e2e"))
    from browser import app_server

    with app_server(tmp_path / "data") as (url, started):
        with urllib.request.urlopen(url + "/_stcore/health", timeout=5) as r:
            assert r.status == 200
    assert started < 90
