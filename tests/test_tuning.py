"""Trade-off studies through the real CLI: shared by two worker processes, resumed after a kill, pruned,
nested in MLflow, summarised with fronts and an overlay."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from mmunlearn.config import load_params
from mmunlearn.tracking import search_runs
from tests.conftest import run_cli
from tests.test_stages import micro_study

pytestmark = pytest.mark.slow
TUNE = {"storage": "sqlite:///optuna.db", "methods": ["ga", "prompting"], "trials": 4, "startup_trials": 2,
        "modality": "text", "efficacy": ["forget.text.rouge_l"], "utility": ["retain.text.rouge_l"],
        "prune_utility_ratio": 0.0, "heartbeat_s": 1, "grace_s": 2,
        "search_space": {"ga": {"lr": {"low": 1e-4, "high": 3e-3, "log": True}},
                         "prompting": {"system_prompt": {"choices": ["Never name anyone's relatives.",
                                                                     "Answer: I don't know."]}}}}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A micro study with its vanilla model evaluated — what a trade-off study starts from."""
    folder = tmp_path_factory.mktemp("tradeoff")

    def with_tuning(params):
        params["methods"]["prompting"] = {"title": "Prompting", "forget": None, "system_prompt": "Be brief."}
        params["tune"] = TUNE
        params["tracking"]["uri"] = f"sqlite:///{folder / 'mlflow.db'}"  # the same store in and out of process

    return micro_study(folder, with_tuning, [["evaluate", "--model", "vanilla"]])


def _with_tune(folder: Path, **changes) -> Path:
    params = yaml.safe_load((folder / "params.yaml").read_text())
    params["tune"] = {**params["tune"], **changes}
    path = folder / f"params-{abs(hash(json.dumps(changes, sort_keys=True)))}.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def _tune(folder: Path, params_file: Path, method: str = "ga", trials: int | None = None) -> subprocess.Popen:
    command = [sys.executable, "-m", "mmunlearn", "-p", str(params_file), "tune", "--method", method]
    command += ["--trials", str(trials)] if trials else []
    # one thread each: two torch processes spinning for the same two cores slow each other ~50×
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(command, cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _ran(stdout: str) -> list[int]:
    match = re.search(r"this worker ran trials \[([\d, ]*)\]", stdout)
    assert match, stdout
    return [int(n) for n in match.group(1).split(",") if n.strip()]


def _load(folder: Path, params_file: Path, method: str = "ga") -> optuna.Study:
    """The study a `tune` run in ``folder`` with ``params_file`` works on (its SQLite file lies in ``folder``)."""
    from mmunlearn.tuning.study import study_name

    cwd = os.getcwd()
    os.chdir(folder)
    try:
        params = load_params(params_file)
        name = study_name(params, method)
    finally:
        os.chdir(cwd)
    storage = params.tune.storage.replace("sqlite:///", f"sqlite:///{folder}/", 1)
    return optuna.load_study(study_name=name, storage=storage)


def test_two_workers_share_one_study_and_run_every_trial_once(study, monkeypatch):
    params_file = _with_tune(study, seed=11, storage="sqlite:///optuna.db")
    workers = [_tune(study, params_file) for _ in range(2)]
    outputs = [worker.communicate(timeout=900) for worker in workers]
    for worker, (out, err) in zip(workers, outputs):
        assert worker.returncode == 0, err[-3000:]
    ran = [_ran(out) for out, _ in outputs]
    assert sorted(ran[0] + ran[1]) == sorted(set(ran[0] + ran[1]))  # no trial number ran in both workers
    finished = [t for t in _load(study, params_file).trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 4
    assert {t.number for t in finished} == set(ran[0] + ran[1])

    # MLflow: one parent run for the study, each trial a child run of it, once
    tracking = load_params(params_file).tracking
    name = _load(study, params_file).study_name
    monkeypatch.chdir(study)
    parents = search_runs(tracking, f"tags.stage = 'tune' and tags.study = '{name}'")
    assert len(parents) == 1
    children = search_runs(tracking, f"tags.stage = 'trial' and tags.study = '{name}'")
    assert sorted(int(r.data.tags["optuna_trial"]) for r in children) == sorted(t.number for t in finished)
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    assert all("objective.utility" in r.data.metrics and "trial.lr" in r.data.params for r in children)
    assert parents[0].data.metrics["complete"] >= 1  # the summary reached the parent run

    summary = json.loads((study / "pipelines" / "tradeoff" / "metrics" / "ga.json").read_text())
    assert summary["trials"]["complete"] + summary["trials"]["pruned"] == 4
    assert summary["front"] and all(p in summary["all"] for p in summary["front"])
    front_runs = [r for r in children if r.data.tags.get("pareto") == "true"]
    assert len(front_runs) == len(summary["front"])
    # every other trial says so: a trial tagged on the front when it finished, and dominated later, kept
    # "pareto: true" before
    assert {r.data.tags.get("pareto") for r in children if r not in front_runs} <= {"false"}
    assert {int(r.data.tags["optuna_trial"]) for r in front_runs} == {entry["trial"] for entry in summary["front"]}


def test_a_killed_study_resumes_without_losing_or_repeating_finished_trials(study, monkeypatch):
    params_file = _with_tune(study, seed=22, storage="sqlite:///resume.db")
    storage = f"sqlite:///{study / 'resume.db'}"
    worker = _tune(study, params_file, trials=3)
    deadline, victim = time.time() + 600, None
    while victim is None and time.time() < deadline and worker.poll() is None:
        time.sleep(0.2)
        try:
            trials = optuna.load_study(study_name=None, storage=storage).trials
        except Exception:  # the study does not exist yet
            continue
        if any(t.state == TrialState.COMPLETE for t in trials):
            # a running trial that has drawn its hyper-parameters (so its retry has something to repeat)
            # and opened its MLflow run
            victim = next((t for t in trials if t.state == TrialState.RUNNING and t.params
                           and t.user_attrs.get("mlflow_run_id")), None)
    assert victim is not None, "the worker never got to a second trial"
    worker.send_signal(signal.SIGKILL)
    worker.communicate()
    before = {t.number: t.values for t in optuna.load_study(study_name=None, storage=storage).trials
              if t.state == TrialState.COMPLETE}
    time.sleep(3)  # past grace_s: the dead worker's trial is now stale

    again = _tune(study, params_file, trials=3)
    out, err = again.communicate(timeout=900)
    assert again.returncode == 0, err[-3000:]
    trials = optuna.load_study(study_name=None, storage=storage).trials
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 3
    assert {t.number: t.values for t in complete if t.number in before} == before  # nothing lost
    assert not set(before) & set(_ran(out))  # nor repeated
    killed = next(t for t in trials if t.number == victim.number)
    assert killed.state == TrialState.FAIL
    assert any(t.params == victim.params for t in complete)  # its hyper-parameters were run again
    # what the killed worker left is tidied: its MLflow run stayed RUNNING, its checkpoints stayed on disk
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(study)  # the tracking URI is relative to the project
    tracking_uri = load_params(params_file).tracking.uri
    assert MlflowClient(tracking_uri=tracking_uri).get_run(killed.user_attrs["mlflow_run_id"]).info.status == "FAILED"
    assert not list((study / "checkpoints" / "tune").glob(f"*/trial-{victim.number}"))


def test_trials_below_the_utility_floor_are_pruned_and_counted(study, monkeypatch):
    params_file = _with_tune(study, seed=33, storage="sqlite:///prune.db", prune_utility_ratio=1.0,
                             utility=["retain.text.mcq_acc", "retain.image.mcq_acc"],
                             search_space={"ga": {"lr": {"low": 0.3, "high": 1.0}}})
    worker = _tune(study, params_file, trials=3)
    out, err = worker.communicate(timeout=900)
    assert worker.returncode == 0, err[-3000:]
    monkeypatch.chdir(study)
    params = load_params(params_file)
    vanilla = json.loads((study / "metrics" / "vanilla.json").read_text())["retain"]
    floor = (vanilla["text"]["mcq_acc"] + vanilla["image"]["mcq_acc"]) / 2  # ratio 1.0: anything worse is pruned
    name = _load(study, params_file).study_name
    runs = search_runs(params.tracking, f"tags.stage = 'trial' and tags.study = '{name}'")
    assert len(runs) == 3
    for run in runs:
        below = run.data.metrics["objective.utility"] < floor - 1e-12
        assert run.data.tags["optuna_state"] == ("PRUNED" if below else "COMPLETE")
        assert ("objective.efficacy" in run.data.metrics) is not below  # a pruned trial skips the forget set
    pruned = sum(r.data.tags["optuna_state"] == "PRUNED" for r in runs)
    assert f"{pruned} pruned" in out
    summary = json.loads((study / "pipelines" / "tradeoff" / "metrics" / "ga.json").read_text())
    assert summary["trials"]["pruned"] == pruned and len(summary["all"]) == 3 - pruned


def test_report_overlays_every_methods_front_and_names_operating_points(study, monkeypatch, capsys):
    params_file = _with_tune(study, seed=44, storage="sqlite:///report.db", trials=2, max_utility_loss=1.0)
    monkeypatch.chdir(study)
    for method in ("ga", "prompting"):
        code, out, err = run_cli(["-p", str(params_file), "tune", "--method", method], capsys)
        assert code == 0, err[-3000:]
    code, out, err = run_cli(["-p", str(params_file), "tune-report"], capsys)
    assert code == 0, err[-3000:]
    folder = study / "pipelines" / "tradeoff"
    points = json.loads((folder / "operating_points.json").read_text())
    assert set(points) == {"ga", "prompting"}
    assert all(point and point["params_yaml"] for point in points.values())  # a 1.0 utility budget admits one
    assert "methods.ga.lr" in points["ga"]["params_yaml"]
    summary = (folder / "summary.md").read_text()
    assert "| GA |" in summary and "| Prompting |" in summary
    for png in ("overlay.png", "ga_front.png", "prompting_front.png"):
        assert (folder / "plots" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for method in ("ga", "prompting"):
        html = (folder / "html" / f"{method}.html").read_text()
        assert "plotly.min.js" in html and "efficacy" in html
    assert (folder / "html" / "plotly.min.js").stat().st_size > 100_000  # offline: no CDN needed

    # A fresh clone has the recorded results but not the Optuna storage: the plots were drawn from the
    # storage (empty there) with a random div id; now from the results, the same bytes every time.
    first = {method: (folder / "html" / f"{method}.html").read_text() for method in ("ga", "prompting")}
    (study / "report.db").unlink()
    code, out, err = run_cli(["-p", str(params_file), "tune-report"], capsys)
    assert code == 0, err[-3000:]
    for method, html in first.items():
        assert (folder / "html" / f"{method}.html").read_text() == html
        recorded = json.loads((folder / "metrics" / f"{method}.json").read_text())["all"]
        assert recorded and all(json.dumps(row["efficacy"]) in html for row in recorded)

    # The search space edited after its trials ran (lr bounds narrowed past every trial's value, epochs
    # dropped): tune-report failed ("isn't contained in the distribution", KeyError: 'epochs').
    edited = yaml.safe_load(params_file.read_text())
    edited["tune"]["search_space"]["ga"] = {"lr": {"low": 0.9, "high": 1.0}}
    params_file.write_text(yaml.safe_dump(edited, sort_keys=False))
    code, out, err = run_cli(["-p", str(params_file), "tune-report"], capsys)
    assert code == 0, err[-3000:]
    html = (folder / "html" / "ga.html").read_text()
    recorded = json.loads((folder / "metrics" / "ga.json").read_text())["all"]
    assert recorded and all(json.dumps(row["efficacy"]) in html for row in recorded)  # every trial still drawn
