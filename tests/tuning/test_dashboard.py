"""optuna-dashboard, as the README starts it, opens a study made the way `mmunlearn tune` makes it."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from mmunlearn.config import Params, TuneConfig
from mmunlearn.tuning.study import open_study


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_optuna_dashboard_lists_the_study_and_its_trials(tmp_path):
    dashboard = shutil.which("optuna-dashboard", path=str(Path(sys.executable).parent))
    assert dashboard, "optuna-dashboard is a dependency of the project"
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = open_study(Params(tune=TuneConfig(storage=storage)), "mmunlearn-ga-test")
    for x in (0.2, 0.6):
        trial = study.ask()
        study.tell(trial, [trial.suggest_float("lr", x, x + 0.1), 1 - x])
    port = _free_port()
    server = subprocess.Popen([dashboard, storage, "--host", "127.0.0.1", "--port", str(port), "--quiet"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline, studies = time.time() + 60, None
        while studies is None and time.time() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=2) as reply:
                    studies = json.loads(reply.read())["study_summaries"]
            except OSError:
                time.sleep(0.3)
        assert studies is not None, "the dashboard did not answer"
        (entry,) = [s for s in studies if s["study_name"] == "mmunlearn-ga-test"]
        assert entry["directions"] == ["minimize", "maximize"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/{entry['study_id']}", timeout=5) as reply:
            detail = json.loads(reply.read())
        assert len(detail["trials"]) == 2
    finally:
        server.terminate()
        server.wait(timeout=10)
