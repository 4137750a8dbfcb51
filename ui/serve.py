"""`make app`: Streamlit started with the settings that keep the app fast on the machine it runs on.

The browser test starts the server through the same `command()` and `environment()`, so the
latencies it records (README) are those of `make app`. Streamlit's own options (file watcher off:
watching .venv/ and data/ inside the repository overflowed inotify and slowed every rerun) live in
.streamlit/config.toml, which `streamlit run` reads from the repository root.

Threads: one torch/OpenMP thread per two cores (1 on this project's 2-core machines, where the
same warm Custom prompts run took 10.5 s with 1 thread against 21 s with 2: the server's other
work and the browser compete for the same cores). `OMP_NUM_THREADS` set by the user wins.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def app_threads(cpus: int | None = None) -> int:
    """Torch/OpenMP threads for the app server: half the cores, at least one."""
    cpus = cpus if cpus is not None else (os.cpu_count() or 2)
    return max(1, cpus // 2)


def environment(base: dict | None = None) -> dict:
    env = dict(os.environ if base is None else base)
    env.setdefault("OMP_NUM_THREADS", str(app_threads()))
    env.setdefault("MKL_NUM_THREADS", env["OMP_NUM_THREADS"])
    return env


def command(port: int = 8501, address: str | None = None) -> list[str]:
    cmd = [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.port", str(port)]
    return cmd + (["--server.address", address] if address else [])


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    port = int(argv[0]) if argv else 8501
    os.chdir(ROOT)  # .streamlit/config.toml is read from the working directory
    cmd = command(port)
    os.execvpe(cmd[0], cmd, environment())


if __name__ == "__main__":
    main()
