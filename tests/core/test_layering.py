"""The layout's rules (docs/ARCHITECTURE.md), checked on the tree: ds_core is a library that never
imports the app, pages and ui never import torch, no module is over 400 lines, no private name is
imported across modules, and the public API is importable from the top of the package."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CORE = sorted((REPO / "ds_core").rglob("*.py"))
APP = sorted((REPO / "ui").rglob("*.py")) + sorted((REPO / "pages").glob("*.py")) + [REPO / "app.py"]
FIRST_PARTY = ("ds_core", "ui", "pages")


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module, imported names) of every import statement in a file, relative ones resolved."""
    tree = ast.parse(path.read_text(), str(path))
    pkg = ".".join(path.relative_to(REPO).with_suffix("").parts[:-1])
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level:
                base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                mod = ".".join([*base, mod] if mod else base)
            out.append((mod, [a.name for a in node.names]))
    return out


def _modules():
    names = []
    for p in CORE:
        rel = p.relative_to(REPO).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        if rel.name != "__main__":
            names.append(".".join(parts))
    return names


def test_importing_the_core_loads_no_app_code():
    code = (
        "import importlib, json, sys\n"
        f"for m in {_modules()!r}: importlib.import_module(m)\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('streamlit', 'ui', 'pages'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_core_files_never_import_the_app():
    bad = [
        (p.relative_to(REPO), m)
        for p in CORE
        for m, _ in _imports(p)
        if m.split(".")[0] in ("streamlit", "ui", "pages")
    ]
    assert bad == []


def test_no_torch_in_pages_or_ui():
    bad = [(p.relative_to(REPO), m) for p in APP for m, _ in _imports(p) if m.split(".")[0] == "torch"]
    assert bad == []


def test_services_never_import_streamlit():
    services = sorted((REPO / "ui" / "services").glob("*.py"))
    assert services, "ui/services/ is missing"
    bad = [(p.relative_to(REPO), m) for p in services for m, _ in _imports(p) if m.split(".")[0] == "streamlit"]
    assert bad == []


@pytest.mark.parametrize("path", CORE + APP, ids=lambda p: str(p.relative_to(REPO)))
def test_module_size(path):
    n = len(path.read_text().splitlines())
    assert n <= 400, f"{path.relative_to(REPO)} has {n} lines: split it (one idea per module)"


def test_no_private_name_is_imported_across_modules():
    files = CORE + APP + sorted((REPO / "bench").glob("*.py"))
    bad = [
        (p.relative_to(REPO), m, n)
        for p in files
        for m, names in _imports(p)
        if m.split(".")[0] in FIRST_PARTY
        for n in names
        if n.startswith("_") and not n.startswith("__")
    ]
    assert bad == []


def test_the_public_api_is_importable_from_the_top_without_torch():
    code = (
        "import sys, ds_core\n"
        "from ds_core import SamplingConfig, Problem, OBJECTIVES, INPUT_METHODS, UserError\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
        "from ds_core import load_checkpoint, rollout, attribute, input_attribution, evaluate\n"
        "missing = [n for n in ds_core.__all__ if getattr(ds_core, n, None) is None]\n"
        "assert not missing, missing\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd="/")
    assert out.returncode == 0, out.stderr


def test_every_user_error_shares_one_base():
    from ds_core.analysis.balance.results import BalanceError
    from ds_core.attribution.engine import AttributionError
    from ds_core.attribution.input_methods import InputAttributionError
    from ds_core.episodes.tasks import TaskError
    from ds_core.errors import UserError
    from ds_core.models.checkpoint import CheckpointError
    from ds_core.models.sampling import RolloutError
    from ds_core.store import StoreError
    from ui.services.calibration import CalibrationInputError
    from ui.services.compare import CompareError
    from ui.services.custom_prompts_upload import UploadError
    from ui.services.explorer_decisions import ExplorerError

    for cls in (
        CheckpointError,
        RolloutError,
        StoreError,
        TaskError,
        AttributionError,
        InputAttributionError,
        BalanceError,
        CompareError,
        ExplorerError,
        UploadError,
        CalibrationInputError,
    ):
        assert issubclass(cls, UserError), cls
