"""The study's stages run end to end on micro settings and leave their files and MLflow runs behind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmunlearn.config import load_params
from mmunlearn.tracking import find_runs
from tests.conftest import run_cli, write_params

pytestmark = pytest.mark.slow
MICRO = {
    "data": {"num_profiles": 10, "num_celebrities": 4, "image_size": 32},
    "model": {"tiny": {"vocab_size": 400, "vision_hidden": 32, "text_hidden": 64, "text_layers": 2,
                       "text_intermediate": 128}},
    "base": {"epochs": 1, "batch_size": 32, "mcq_drills": 1},
    "finetune": {"epochs": 1, "batch_size": 32, "lora": {"r": 4, "alpha": 4}},
    "methods": {"ga": {"title": "GA", "forget": "ga", "epochs": 1, "batch_size": 8, "lr": 1e-3}},
    "unlearn": {"methods": ["ga"], "modalities": ["multimodal"]},
    "evaluation": {"max_new_tokens": 4},
}


def micro_study(folder: Path, adjust=lambda params: None, extra_commands=()) -> Path:
    """``folder`` as a micro study with base, vanilla and retain models: the repo's params with MICRO
    merged over them, then ``adjust(params)`` (in place), then ``extra_commands``."""
    import shutil

    import yaml

    from tests.conftest import REPO_ROOT

    shutil.copytree(REPO_ROOT / "expectations", folder / "expectations")
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    for section, values in MICRO.items():
        params[section] = {**params.get(section, {}), **values}
    adjust(params)
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        for command in (["data", "synth"], ["split"], ["base"], ["finetune"], ["finetune", "--subset", "retain"],
                        *extra_commands):
            assert run_cli(command)[0] == 0, command
    return folder


def test_study_stages_write_models_metrics_report_and_mlflow_runs(project, capsys):
    write_params(project, **MICRO)
    for command in (["data", "synth"], ["split"], ["base"], ["finetune"],
                    ["unlearn", "--method", "ga", "--modality", "multimodal"],
                    ["evaluate", "--model", "vanilla"], ["evaluate", "--model", "ga-multimodal"], ["report"]):
        code, _, err = run_cli(command, capsys)
        assert code == 0, (command, err[-2000:])

    assert (project / "models" / "base" / "model.safetensors").is_file()
    for adapter in ("vanilla", "ga-multimodal"):
        assert (project / "models" / adapter / "adapter_model.safetensors").is_file()
    vanilla = json.loads((project / "metrics" / "vanilla.json").read_text())
    assert set(vanilla) == {"forget", "test", "retain", "celebrity"}
    assert set(vanilla["forget"]["image"]) >= {"mcq_acc", "rouge_l", "cloze_acc"}
    table = (project / "reports" / "table.md").read_text()
    assert "| Vanilla | — |" in table and "| GA | image+text |" in table

    params = load_params(project / "params.yaml")
    stages = {run.data.tags["stage"] + ":" + run.data.tags["model"] for run in find_runs(params.tracking)}
    assert stages == {"base:tiny", "finetune:vanilla", "unlearn:ga-multimodal", "evaluate:vanilla",
                      "evaluate:ga-multimodal", "report:all"}
    evaluated = find_runs(params.tracking, stage="evaluate")
    ga_run = next(r for r in evaluated if r.data.tags["model"] == "ga-multimodal")
    assert ga_run.data.metrics["forget.image.mcq_acc"] == pytest.approx(
        json.loads((project / "metrics" / "ga-multimodal.json").read_text())["forget"]["image"]["mcq_acc"])
    from mlflow.tracking import MlflowClient

    unlearn_run = find_runs(params.tracking, stage="unlearn")[0]
    artifacts = [a.path for a in MlflowClient(params.tracking.uri).list_artifacts(unlearn_run.info.run_id,
                                                                                     "ga-multimodal")]
    assert "ga-multimodal/adapter_model.safetensors" in artifacts
    assert unlearn_run.data.tags["git_commit"] and unlearn_run.data.params["method.ga.lr"] == "0.001"


def test_training_stages_are_deterministic(project, capsys):
    """Same params + seed ⇒ the same weights on CPU, whatever ran earlier in the process."""
    import torch

    write_params(project, **MICRO)
    for command in (["data", "synth"], ["split"], ["base"], ["finetune"]):
        assert run_cli(command, capsys)[0] == 0
    adapter = project / "models" / "vanilla" / "adapter_model.safetensors"
    first = adapter.read_bytes()
    assert not (project / "checkpoints" / "vanilla").exists()  # a finished stage leaves nothing to resume
    torch.rand(1000)  # disturb the global RNG, as other work in the process would
    assert run_cli(["finetune"], capsys)[0] == 0
    assert adapter.read_bytes() == first
    # the adapter config must not depend on the process's hash seed (peft stores a set)
    config = json.loads((project / "models" / "vanilla" / "adapter_config.json").read_text())
    assert config["target_modules"] == sorted(config["target_modules"]) and len(config["target_modules"]) > 3


def test_checkpoints_resume_only_the_same_settings(tmp_path):
    from mmunlearn.training.stages import prepare_checkpoints

    folder = tmp_path / "ckpt"
    prepare_checkpoints(folder, {"lr": 1e-3})
    (folder / "checkpoint-4").mkdir()
    prepare_checkpoints(folder, {"lr": 1e-3})  # interrupted run, same settings: keep
    assert (folder / "checkpoint-4").is_dir()
    prepare_checkpoints(folder, {"lr": 5e-4})  # params changed: a resume would be wrong
    assert not (folder / "checkpoint-4").exists()
