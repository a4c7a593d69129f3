"""MLflow conventions — the only module that calls MLflow's API.

One experiment per study; one run per stage per model (``finetune:vanilla``, ``evaluate:ga``...), with
every param flattened (``finetune.lora.r``), every metric flattened (``forget.image.mcq_acc``), tags
for the git commit, the data.dvc hash and the machine (CPU model and the kernel set torch runs on it:
trained weights differ in their last bits between CPU models, so runs from two machines differ in
their figures, and the tags say why), and adapters/reports as artifacts. Secrets never reach it:
params pass through ``public_params`` first (credentials left out, URL passwords masked).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import platform
import subprocess
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from mmunlearn.config import TrackingConfig
from mmunlearn.secrets import mask_url_passwords, names_a_credential

log = logging.getLogger(__name__)


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"forget": {"image": {"mcq_acc": 0.9}}} → {"forget.image.mcq_acc": 0.9}."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            flat.update(flatten(value, name))
        else:
            flat[name] = value
    return flat


def public_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Flattened params without the ones that name a credential, and no URL's password (a base_url or a
    tracking URI may carry one)."""
    return {k: mask_url_passwords(v) if isinstance(v, str) else v
            for k, v in flatten(params).items() if not names_a_credential(k)}


def _git_commit() -> str:
    done = _git("rev-parse", "HEAD")
    return done.stdout.strip() if done is not None and done.returncode == 0 else "unknown"


def _git(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess | None:
    try:
        return subprocess.run(["git", *args], capture_output=True, text=True, cwd=cwd)
    except OSError:
        return None


def source_edited(package: Path = Path(__file__).resolve().parent) -> str:
    """Whether the package's code differs from its checkout's commit (edited, not yet committed): the
    commit tagged then does not say what code ran. Only the source counts: a study rewrites its tracked
    metrics. "unknown" outside a git checkout."""
    inside = _git("rev-parse", "--verify", "-q", "HEAD", cwd=package)  # outside one, git diff compares files
    if inside is None or inside.returncode != 0:
        return "unknown"
    done = _git("diff", "--quiet", "HEAD", "--", ".", cwd=package)
    return {0: "false", 1: "true"}.get(done.returncode, "unknown") if done is not None else "unknown"


def _cpu_model() -> str:
    """The CPU's model name as the OS reports it (/proc/cpuinfo on Linux), else the platform's word."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown"


@functools.cache
def machine_tags() -> dict[str, str]:
    """Where a run computed: the float kernels (torch's CPU capability — AVX512 or AVX2 — picks them, and
    MKL/oneDNN pick theirs by CPU model) decide a trained model's last bits, which training amplifies."""
    import torch

    accelerator = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return {"host.cpu": _cpu_model(), "host.cpu_kernels": torch.backends.cpu.get_cpu_capability(),
            "host.threads": str(torch.get_num_threads()), "host.accelerator": accelerator,
            "host.torch": torch.__version__}


def peak_memory() -> dict[str, float]:
    """This process's peak memory so far, MiB: resident on the host and, where it used a GPU, what torch
    allocated there (what the stage needed) and reserved (what its cache held: what nvidia-smi shows)."""
    import resource
    import sys

    peaks = {"host.peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}  # KiB on Linux
    torch = sys.modules.get("torch")  # a stage that never imported torch used no GPU
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        peaks["host.peak_gpu_allocated_mib"] = torch.cuda.max_memory_allocated() / 2**20
        peaks["host.peak_gpu_reserved_mib"] = torch.cuda.max_memory_reserved() / 2**20
    return peaks


def data_hash(data_dvc: Path) -> str:
    import yaml

    try:
        outs = yaml.safe_load(data_dvc.read_text())["outs"]
        return str(outs[0]["md5"])
    except (OSError, KeyError, IndexError, TypeError, yaml.YAMLError):
        return "unknown"


def _experiment_id(config: TrackingConfig) -> str:
    import mlflow

    from mmunlearn.errors import ConfigError
    from mmunlearn.network import unreachable
    from mmunlearn.stores import open_shared_store

    shown = mask_url_passwords(config.uri)
    if config.uri.startswith(("http://", "https://")):
        problem = unreachable(config.uri)
        if problem:  # MLflow's client retries a refused connection for over ten minutes
            raise ConfigError(f"tracking.uri: {shown} cannot be reached ({problem}): start the server "
                              "(README, \"Experiment tracking\") or set tracking.uri to a local store, "
                              "e.g. sqlite:///mlflow.db")
    mlflow.set_tracking_uri(config.uri)
    experiment = open_shared_store(lambda: mlflow.get_experiment_by_name(config.experiment),
                                   f"tracking.uri: the store {shown}",
                                   "repair or move it, or set tracking.uri to another store")
    if experiment is not None:
        return experiment.experiment_id
    location = Path(config.artifact_root).resolve().as_uri()
    try:
        return mlflow.create_experiment(config.experiment, artifact_location=location)
    except mlflow.exceptions.MlflowException:  # another worker created it a moment ago
        experiment = mlflow.get_experiment_by_name(config.experiment)
        if experiment is None:
            raise
        return experiment.experiment_id


@contextlib.contextmanager
def stage_run(config: TrackingConfig, stage: str, model_name: str, params: Mapping[str, Any],
              data_dvc: Path = Path("data.dvc"), parent_run_id: str | None = None,
              tags: Mapping[str, str] | None = None) -> Iterator[Any]:
    """An MLflow run for one stage of one model, with params and provenance tags logged (nested under
    ``parent_run_id`` if given: a tuning trial under its study's run)."""
    import mlflow

    experiment_id = _experiment_id(config)
    tags = {"stage": stage, "model": model_name, "git_commit": _git_commit(), "git_source_edited": source_edited(),
            "data_dvc_md5": data_hash(data_dvc),
            **machine_tags(), **(tags or {})}
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"{stage}:{model_name}", tags=tags,
                          parent_run_id=parent_run_id, nested=parent_run_id is not None) as run:
        flat = {k: str(v)[:6000] for k, v in public_params(params).items()}
        for start in range(0, len(flat), 100):  # MLflow's batch limit
            mlflow.log_params(dict(list(flat.items())[start:start + 100]))
        yield run
        mlflow.log_metrics(peak_memory())  # what the stage needed, to size a machine for it


def _numeric(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Flattened numeric metrics (None, strings and booleans left out)."""
    return {k: float(v) for k, v in flatten(metrics).items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def log_metrics(metrics: Mapping[str, Any], step: int | None = None) -> None:
    import mlflow

    mlflow.log_metrics(_numeric(metrics), step=step)


def log_artifacts(folder: Path, artifact_path: str) -> None:
    import mlflow

    mlflow.log_artifacts(str(folder), artifact_path=artifact_path)


def log_file(path: Path, artifact_path: str) -> None:
    import mlflow

    mlflow.log_artifact(str(path), artifact_path=artifact_path)


def find_runs(config: TrackingConfig, stage: str | None = None) -> list[Any]:
    """Runs of the study's experiment (newest first), optionally of one stage — read via the client."""
    return search_runs(config, f"tags.stage = '{stage}'" if stage else "")


def shared_parent_run(config: TrackingConfig, stage: str, key: str, params: Mapping[str, Any],
                      data_dvc: Path = Path("data.dvc")) -> str:
    """The id of the one run tagged (``stage``, ``key``), created by whichever process asks first.

    Several workers of one Optuna study may start at once; each creates a run if it finds none, then
    all keep the oldest and a worker that created a younger duplicate deletes it — so every worker's
    trials nest under the same parent without a lock.
    """
    from mlflow.tracking import MlflowClient

    _experiment_id(config)  # store and experiment ready first (workers may race to create them)
    query = f"tags.stage = '{stage}' and tags.study = '{key}'"

    def existing():  # oldest first; the run id breaks a tie of equal start times the same way everywhere
        return sorted(search_runs(config, query), key=lambda run: (run.info.start_time, run.info.run_id))

    created = None
    if not existing():
        with stage_run(config, stage, key, params, data_dvc, tags={"study": key}) as run:
            created = run.info.run_id
    oldest = existing()[0].info.run_id
    if created is not None and created != oldest:
        MlflowClient(tracking_uri=config.uri).delete_run(created)
    return oldest


def set_tags(run_id: str, tags: Mapping[str, str], config: TrackingConfig) -> None:
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=config.uri)
    for key, value in tags.items():
        try:
            client.set_tag(run_id, key, value)
        except MlflowException:
            # SQL stores read, then insert: two workers tagging one run (a study's front) can both read
            # "absent" and the second insert fails. The tag exists now; write it again as an update.
            if client.get_run(run_id).data.tags.get(key) != value:
                client.set_tag(run_id, key, value)


def end_abandoned_run(run_id: str, config: TrackingConfig) -> bool:
    """Mark FAILED a run its process left RUNNING when it was killed; True if it was one."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=config.uri)
    if client.get_run(run_id).info.status != "RUNNING":
        return False
    client.set_terminated(run_id, status="FAILED")
    return True


def search_runs(config: TrackingConfig, filter_string: str) -> list[Any]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=config.uri)
    experiment = client.get_experiment_by_name(config.experiment)
    if experiment is None:
        return []
    return client.search_runs([experiment.experiment_id], filter_string=filter_string, order_by=["start_time DESC"])


def log_metrics_to(run_id: str, metrics: Mapping[str, Any], config: TrackingConfig, step: int = 0) -> None:
    """Log metrics to a run that is not the active one (a study's parent run, from any worker).

    A run's value of a metric is the one at its highest step, whatever the order of writing: several
    workers writing one run pass how far their view goes (e.g. trials finished) as ``step``, so the
    fullest view stands even when a worker with an older one writes last."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    now = int(time.time() * 1000)
    MlflowClient(tracking_uri=config.uri).log_batch(
        run_id, metrics=[Metric(k, v, now, step) for k, v in _numeric(metrics).items()])
