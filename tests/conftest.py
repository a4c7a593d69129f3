"""Shared fixtures: a small params file in a scratch project folder, and a small benchmark."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest
import yaml

# Nothing in the test suite may reach a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
# The suite is CPU work (CI has no GPU): on a GPU machine it computes on the CPU too, with the same floats.
os.environ.setdefault("MMUNLEARN_DEVICE", "cpu")

REPO_ROOT = Path(__file__).resolve().parents[1]
SMALL_DATA = {"seed": 7, "num_profiles": 20, "num_celebrities": 4, "image_size": 32}


def write_params(folder: Path, **sections) -> Path:
    """Write params.yaml into ``folder``: the repo's params with ``sections`` merged over them."""
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    for name, values in sections.items():
        params[name] = {**params.get(name, {}), **values}
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    """A scratch project folder (cwd) with small-data params and the real expectation suites."""
    shutil.copytree(REPO_ROOT / "expectations", tmp_path / "expectations")
    write_params(tmp_path, data=SMALL_DATA)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run_cli(args: list[str], capsys=None) -> tuple[int, str, str]:
    """Run the real console entry point in-process; return (exit code, stdout, stderr) — "" without capsys."""
    from mmunlearn.cli import main

    argv = sys.argv
    sys.argv = ["mmunlearn", *args]
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = argv
    if capsys is None:
        return code, "", ""
    captured = capsys.readouterr()
    return code, captured.out, captured.err
