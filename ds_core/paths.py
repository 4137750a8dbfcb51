"""Where DS-Lens keeps things: the repository, the shipped checkpoints, the package's data files."""

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent
SHIPPED_DIR = REPO_ROOT / "checkpoints"  # the checkpoints shipped in git
PACKAGE_DATA = PACKAGE_DIR / "data"  # fixed test sets, the balance precompute
