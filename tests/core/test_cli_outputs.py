"""Every CLI output path is checked before the command works: an unwritable --json/--out is one
clean error line at once (exit 2, nothing printed on stdout, no store written)."""

from __future__ import annotations

import os
import time

import pytest
from conftest import assert_clean_cli_error

from ds_core.cli import main
from ds_core.cli.outputs import OUTPUT_DIRS, OUTPUT_FILES, OutputPathError, check_dir, check_file
from ds_core.paths import SHIPPED_DIR

RL = str(SHIPPED_DIR / "rl")


def _bad_paths(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    (tmp_path / "adir").mkdir()
    return {
        "missing directory": (str(tmp_path / "nope" / "x.json"), "does not exist"),
        "a directory": (str(tmp_path / "adir"), "directory"),
        "read-only directory": (str(ro / "x.json"), "cannot write"),
        "unwritable even for root": ("/sys/ds_lens_out.json", "cannot write"),  # sysfs takes no new files
    }


@pytest.mark.parametrize(
    "argv",
    [
        ["eval", "--checkpoint", RL, "--sizes", "3x3", "--n", "2", "--json", "{}"],
        ["attribute", "--checkpoint", RL, "--sizes", "3x3", "--n", "1", "--out", "{}"],
        ["explore", "--checkpoint", RL, "--prompt", "12*34", "--json", "{}"],
        ["report", "--out", "{}"],
    ],
)
@pytest.mark.parametrize(
    "case", ["missing directory", "a directory", "read-only directory", "unwritable even for root"]
)
def test_bad_output_paths_fail_before_any_work(argv, case, tmp_path, capsys, monkeypatch):
    if case == "read-only directory" and os.geteuid() == 0:
        pytest.skip("root writes into read-only directories (the sysfs case covers it)")
    if case == "unwritable even for root" and not os.path.isdir("/sys/kernel"):
        pytest.skip("no sysfs on this machine")
    monkeypatch.setenv("DS_LENS_DATA", str(tmp_path / "data"))
    path, word = _bad_paths(tmp_path)[case]
    t0 = time.perf_counter()
    rc = main([a.replace("{}", path) for a in argv])
    out, err = capsys.readouterr()
    assert_clean_cli_error(rc, out, err, word)
    assert time.perf_counter() - t0 < 5  # nothing was sampled
    assert not (tmp_path / "data").exists()  # no store was opened


def test_the_checks(tmp_path):
    f = tmp_path / "out.json"
    assert check_file(str(f), "--json") == f and not f.exists()  # the probe leaves nothing behind
    f.write_text("old")
    check_file(str(f), "--json")
    assert f.read_text() == "old"  # an existing file is not truncated by the check
    assert check_dir(str(tmp_path / "new" / "deeper"), "--out") == tmp_path / "new" / "deeper"
    with pytest.raises(OutputPathError, match="is a file"):
        check_dir(str(f), "--out")
    assert set(OUTPUT_FILES) | set(OUTPUT_DIRS) >= {"eval", "report", "attribute", "explore", "balance", "train"}


def test_train_out_that_is_a_file(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    rc = main(["train", "base", "--smoke", "--out", str(f)])
    out, err = capsys.readouterr()
    assert_clean_cli_error(rc, out, err, "not a directory")
