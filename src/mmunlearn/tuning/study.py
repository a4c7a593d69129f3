"""``mmunlearn tune --method X``: one worker of a method's multi-objective Optuna study.

The study lives in Optuna's own RDB storage (``tune.storage``): any number of workers — processes or
machines — run ``tune`` against it and share the trial budget ``tune.trials`` exactly (a trial asked
beyond the budget by a racing worker is dropped as failed before it trains). Workers send heartbeats;
a trial whose worker died (killed, machine lost) is marked failed after ``tune.grace_s`` and re-run
with the same hyper-parameters by the next worker, so finished trials are never lost or repeated.

The study's name carries a digest of everything its trials' results depend on (method settings,
search space, objectives, data, model weights), so changed params start a new study while an
interrupted one resumes. Each trial is an MLflow run nested under the study's run; adapters are kept
only for trials on the Pareto front when they finish.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
import warnings
from pathlib import Path

import optuna
from optuna.trial import TrialState

from mmunlearn.atomic import read_json
from mmunlearn.config import Params
from mmunlearn.errors import ConfigError, DataError
from mmunlearn.secrets import mask_url_passwords
from mmunlearn.tuning.front import on_front
from mmunlearn.tuning.objectives import Objectives
from mmunlearn.tuning.space import SeededStartupSampler, suggest, with_overrides

log = logging.getLogger(__name__)
# heartbeats and fail_stale_trials are marked experimental in Optuna; they are what makes resume work
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
STAGE = "tune"
DIRECTIONS = ("minimize", "maximize")  # efficacy, utility
CLAIMED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)


class SurplusTrial(Exception):
    """A trial asked for after the budget was already claimed by other workers."""


def _folder_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    if folder.is_dir():
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            digest.update(str(path.relative_to(folder)).encode())
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def study_name(params: Params, method: str) -> str:
    """``<experiment>-<method>-<digest>``: the same inputs resume the same study, any change starts anew."""
    from mmunlearn.tracking import data_hash

    tune = params.tune
    inputs = {
        "method": params.methods[method].model_dump(mode="json"),
        "space": {k: v.model_dump(mode="json") for k, v in tune.search_space.get(method, {}).items()},
        "objectives": [tune.efficacy, tune.utility], "modality": tune.modality, "seed": tune.seed,
        "startup": tune.startup_trials, "prune": tune.prune_utility_ratio,
        "evaluation": params.evaluation.model_dump(mode="json", exclude={"judge": {"cache", "concurrency"}}),
        "model": params.model.model_dump(mode="json"), "lora": params.finetune.lora.model_dump(mode="json"),
        "data": data_hash(params.paths.data_dvc), "split": _folder_digest(params.paths.splits),
        "weights": [_folder_digest(params.paths.models / name) for name in ("base", "vanilla", "retain")],
    }
    digest = hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return f"{params.tracking.experiment}-{method}-{digest}"


def open_study(params: Params, name: str) -> optuna.Study:
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    from mmunlearn.stores import open_shared_store

    tune = params.tune

    def open_it() -> optuna.Study:
        storage = RDBStorage(tune.storage, heartbeat_interval=tune.heartbeat_s, grace_period=tune.grace_s,
                             heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=2))
        return optuna.create_study(study_name=name, storage=storage, directions=list(DIRECTIONS),
                                   load_if_exists=True, sampler=SeededStartupSampler(tune.seed, tune.startup_trials))

    # workers starting together race to create a new storage's tables (or the study)
    return open_shared_store(open_it, f"tune.storage: the storage {mask_url_passwords(tune.storage)}",
                             "repair or move it, or set tune.storage to another storage")


def vanilla_objectives(params: Params, objectives: Objectives) -> dict[str, float]:
    """The vanilla model's efficacy and utility, from the study's own evaluation (metrics/vanilla.json)."""
    from mmunlearn.evaluation.stage import metrics_path

    path = metrics_path(params, "vanilla")
    if not path.is_file():
        raise DataError(f"{path}: not found — the trade-off study compares against the vanilla model's "
                        "evaluation (`mmunlearn evaluate --model vanilla`, or `dvc repro`)")
    results = read_json(path)
    try:
        return {"efficacy": objectives.efficacy_of(results), "utility": objectives.utility_of(results)}
    except ValueError as exc:
        raise DataError(f"{path}: {exc}") from None


def _claimed_before(study: optuna.Study, number: int) -> int:
    return sum(1 for t in study.get_trials(deepcopy=False, states=CLAIMED) if t.number < number)


def _duplicate_of(study: optuna.Study, trial: optuna.Trial):
    for done in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if done.number != trial.number and done.params == trial.params:
            return done
    return None


class TrialRunner:
    """The objective: trains and evaluates one trial, logs it to MLflow nested under the study's run."""

    def __init__(self, params: Params, method: str, name: str, budget: int, parent_run_id: str,
                 vanilla: dict[str, float]):
        from mmunlearn.data.splits import load_split
        from mmunlearn.evaluation.judge import build_judge

        self.params, self.method, self.name, self.budget = params, method, name, budget
        self.parent_run_id = parent_run_id
        self.objectives = Objectives.from_config(params.tune, params.source)
        self.judge = build_judge(params.evaluation.judge) if self.objectives.judged else None
        self.split = load_split(params.paths.splits)
        self.space = params.tune.search_space.get(method, {})
        self.utility_floor = params.tune.prune_utility_ratio * vanilla["utility"]
        self.ran: list[int] = []  # trial numbers this worker trained and evaluated

    def __call__(self, trial: optuna.Trial) -> tuple[float, float]:
        if _claimed_before(trial.study, trial.number) >= self.budget:
            trial.set_user_attr("surplus", True)
            raise SurplusTrial(f"trial {trial.number}: the budget of {self.budget} is already claimed")
        values = suggest(trial, self.space)
        twin = _duplicate_of(trial.study, trial)
        if twin is not None:  # same hyper-parameters as a finished trial: same result, no need to train again
            trial.set_user_attr("duplicate_of", twin.number)
            return tuple(twin.values)
        return self._run(trial, values)

    def _run(self, trial: optuna.Trial, values: dict) -> tuple[float, float]:
        from mmunlearn import tracking
        from mmunlearn.evaluation.run import EvaluationSettings
        from mmunlearn.tuning.trial import evaluate_sets, train_candidate

        params, tune = self.params, self.params.tune
        config = with_overrides(params.methods[self.method], values)
        settings = EvaluationSettings.of(params.evaluation, config.system_prompt, self.judge)
        workdir = params.paths.checkpoints / STAGE / self.name / f"trial-{trial.number}"
        shutil.rmtree(workdir, ignore_errors=True)  # a dead worker's leftovers of this trial
        log_params = {"method": {self.method: config.model_dump(mode="json")}, "trial": values,
                      "unlearn": {"modality": tune.modality}}
        tags = {"study": self.name, "optuna_trial": str(trial.number), "method": self.method}
        pruned = None
        with tracking.stage_run(params.tracking, "trial", f"{self.method}#{trial.number}", log_params,
                                params.paths.data_dvc, parent_run_id=self.parent_run_id, tags=tags) as run:
            trial.set_user_attr("mlflow_run_id", run.info.run_id)
            model, processor, adapter = train_candidate(params, self.method, config, tune.modality, workdir)
            results = evaluate_sets(model, processor, self.split, self.objectives.utility_sets, settings)
            utility = self.objectives.utility_of(results)
            tracking.log_metrics({**results, "objective": {"utility": utility}})
            if utility < self.utility_floor:  # collapsed: not worth evaluating forgetting
                pruned = (f"utility {utility:.3f} < {self.utility_floor:.3f} "
                          f"({tune.prune_utility_ratio} × the vanilla model's)")
            else:
                more = evaluate_sets(model, processor, self.split,
                                     self.objectives.efficacy_sets - self.objectives.utility_sets, settings)
                results.update(more)
                efficacy = self.objectives.efficacy_of(results)
                tracking.log_metrics({**more, "objective": {"efficacy": efficacy}})
                finished = [tuple(t.values) for t in trial.study.get_trials(deepcopy=False,
                                                                           states=(TrialState.COMPLETE,))]
                if adapter is not None and on_front((efficacy, utility), finished):
                    tracking.log_artifacts(adapter, "adapter")
            mlflow_state = "PRUNED" if pruned else "COMPLETE"
            tracking.set_tags(run.info.run_id, {"optuna_state": mlflow_state}, params.tracking)
        shutil.rmtree(workdir, ignore_errors=True)
        self.ran.append(trial.number)
        if pruned:
            log.info("%s trial %d pruned: %s (%s)", self.method, trial.number, pruned, values)
            raise optuna.TrialPruned(pruned)
        log.info("%s trial %d: efficacy %.3f, utility %.3f (%s)", self.method, trial.number, efficacy, utility, values)
        return efficacy, utility


def counts(study: optuna.Study) -> dict[str, int]:
    """Trials per state; ``fail`` counts real failures (dead workers, errors), ``surplus`` the dropped extras."""
    trials = study.get_trials(deepcopy=False)
    result = {state.name.lower(): sum(1 for t in trials if t.state == state) for state in TrialState}
    result["surplus"] = sum(1 for t in trials if t.state == TrialState.FAIL and t.user_attrs.get("surplus"))
    result["fail"] -= result["surplus"]
    return result


def _tidy_failed_trials(study: optuna.Study, runner: TrialRunner) -> None:
    """What a killed worker's trial left: its MLflow run still RUNNING (now FAILED, as the trial) and its
    checkpoint folder (the retry runs under another trial number, so it never reused the folder)."""
    from mmunlearn import tracking

    params = runner.params
    for trial in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
        run_id = trial.user_attrs.get("mlflow_run_id")
        if run_id and tracking.end_abandoned_run(run_id, params.tracking):
            log.info("%s trial %d: its worker died; MLflow run %s marked FAILED", runner.method, trial.number, run_id)
        shutil.rmtree(params.paths.checkpoints / STAGE / runner.name / f"trial-{trial.number}", ignore_errors=True)


def _work(study: optuna.Study, runner: TrialRunner, budget: int, poll_s: float) -> None:
    """Run trials until the budget is claimed, then wait for other workers' trials to finish."""
    from optuna.storages import fail_stale_trials

    while True:
        fail_stale_trials(study)  # dead workers' trials → failed, re-queued with the same hyper-parameters
        _tidy_failed_trials(study, runner)
        trials = study.get_trials(deepcopy=False, states=CLAIMED)
        waiting = any(t.state == TrialState.WAITING for t in trials)
        if len(trials) < budget or waiting:
            study.optimize(runner, n_trials=1, catch=(SurplusTrial,), gc_after_trial=True)
            continue
        if not any(t.state == TrialState.RUNNING for t in trials):
            return
        time.sleep(poll_s)


def tune(params: Params, method: str, trials: int | None = None) -> dict:
    """Work on ``method``'s study until its budget is done; write its summary and front plot; return the summary."""
    from mmunlearn import tracking
    from mmunlearn.tuning.outputs import write_study_outputs

    if method not in params.methods:
        raise ConfigError(f"--method {method!r}: not under methods: in {params.source} (have: {sorted(params.methods)})")
    if not params.tune.search_space.get(method):  # every trial would train one configuration, the same
        raise ConfigError(f"{params.source}: tune.search_space.{method}: nothing to search; give at least one "
                          "setting's range (low/high) or choices")
    objectives = Objectives.from_config(params.tune, params.source)
    vanilla = vanilla_objectives(params, objectives)
    budget = trials or params.tune.trials
    name = study_name(params, method)
    study = open_study(params, name)
    log_params = {"tune": params.tune.model_dump(mode="json", exclude={"search_space", "storage"}),
                  "search_space": {k: v.model_dump(mode="json") for k, v in params.tune.search_space.get(method, {}).items()},
                  "method": {method: params.methods[method].model_dump(mode="json")},
                  "storage": mask_url_passwords(params.tune.storage)}
    parent = tracking.shared_parent_run(params.tracking, STAGE, name, log_params, params.paths.data_dvc)
    runner = TrialRunner(params, method, name, budget, parent, vanilla)
    log.info("tune %s: study %s in %s, %d trials in total", method, name, mask_url_passwords(params.tune.storage), budget)
    _work(study, runner, budget, poll_s=min(5.0, params.tune.heartbeat_s))
    summary = write_study_outputs(params, method, study, vanilla, budget)
    finished = sum(n for state, n in summary["trials"].items() if state not in ("running", "waiting"))
    tracking.log_metrics_to(parent, {"front_size": len(summary["front"]), **summary["trials"]}, params.tracking,
                            step=finished)
    run_ids = {t.number: t.user_attrs.get("mlflow_run_id") for t in study.get_trials(deepcopy=False)}
    front = {entry["trial"] for entry in summary["front"]}
    for number, run_id in run_ids.items():  # a trial a later one dominates loses the tag it had
        if run_id:
            tracking.set_tags(run_id, {"pareto": "true" if number in front else "false"}, params.tracking)
    summary["ran_here"] = sorted(runner.ran)
    return summary
