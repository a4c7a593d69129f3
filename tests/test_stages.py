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
    "finetune": {"epochs": 1, "batch_size": 32, "mcq_drills": 1, "lora": {"r": 4, "alpha": 4}},
    "methods": {"ga": {"title": "GA", "forget": "ga", "epochs": 1, "batch_size": 8, "lr": 1e-3},
                "hp_defense": {"title": "HPDefense", "forget": "head_projection_defense", "labels_on": "fact",
                               "lens_layers": [-2, -1], "retain": "nll", "epochs": 1, "batch_size": 8}},
    "unlearn": {"methods": ["ga"], "modalities": ["multimodal"], "defenses": ["hp_defense"],
                "defense_modalities": ["text"]},
    "evaluation": {"max_new_tokens": 4},
    # the micro model has 2 layers; and after 1 epoch says few facts greedily: every fact it gives a probability
    "attack": {"layers": [-2, -1], "budget": 2, "max_new_tokens": 4, "known_min_probability": 1e-30,
               "known_generated": False},
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
                    ["unlearn", "--method", "hp_defense", "--modality", "text"],
                    ["evaluate", "--model", "vanilla"], ["evaluate", "--model", "ga-multimodal"],
                    ["evaluate", "--model", "hp_defense-text"]):
        code, _, err = run_cli(command, capsys)
        assert code == 0, (command, err[-2000:])
    code, _, err = run_cli(["attack", "--model", "ga-multimodal"], capsys)  # before the vanilla rates exist
    assert code != 0 and "metrics/attacks/vanilla.json: not found" in err
    for command in (["attack", "--model", "vanilla"], ["attack", "--model", "ga-multimodal"],
                    ["attack", "--model", "hp_defense-text"], ["report"]):
        code, _, err = run_cli(command, capsys)
        assert code == 0, (command, err[-2000:])

    assert (project / "models" / "base" / "model.safetensors").is_file()
    for adapter in ("vanilla", "ga-multimodal"):
        assert (project / "models" / adapter / "adapter_model.safetensors").is_file()
    vanilla = json.loads((project / "metrics" / "vanilla.json").read_text())
    assert set(vanilla) == {"forget", "test", "retain", "celebrity"}
    assert set(vanilla["forget"]["image"]) >= {"mcq_acc", "rouge_l", "cloze_acc"}
    table = (project / "reports" / "table.md").read_text()
    assert "| Vanilla | — |" in table and "| GA | image+text |" in table and "| HPDefense | text |" in table
    attacks = {model: json.loads((project / "metrics" / "attacks" / f"{model}.json").read_text())
               for model in ("vanilla", "ga-multimodal", "hp_defense-text")}
    assert {"head_projection", "probability_delta", "head_projection_each", "sample", "question_rephrase",
            "image_rephrase_hard", "multimodal_rephrase", "any_blackbox"} <= set(attacks["vanilla"])
    assert "probability_delta2" not in attacks["vanilla"]  # needs 3 layers; the micro model has 2
    for model in ("ga-multimodal", "hp_defense-text"):  # every cell carries the vanilla rate beside its own
        for attack, cells in attacks[model].items():
            for modality, cell in cells.items():
                if attack == "known_facts":  # scored on the facts the vanilla knew: the same for every model
                    assert cell == attacks["vanilla"][attack][modality] and 0 < cell["n"] <= cell["of"]
                elif attack == "rewrite_score":  # the deletion: the vanilla's fact probability beside its own
                    assert cell["before"] == pytest.approx(attacks["vanilla"][attack][modality]["probability"])
                    assert -1 <= cell["score"] <= 1 and cell["n"] > 0
                else:
                    assert cell["before"] == attacks["vanilla"][attack][modality]["success"]
    assert "score" not in attacks["vanilla"]["rewrite_score"]["text"]
    matrix = (project / "reports" / "attacks.md").read_text()
    assert "| HPDefense | text |" in matrix and "(B≈" in matrix and "Rewrite score" in matrix

    _interrupted_evaluation_resumes(project, capsys)

    params = load_params(project / "params.yaml")
    stages = {run.data.tags["stage"] + ":" + run.data.tags["model"] for run in find_runs(params.tracking)}
    assert stages == {"base:tiny", "finetune:vanilla", "unlearn:ga-multimodal", "unlearn:hp_defense-text",
                      "evaluate:vanilla", "evaluate:ga-multimodal", "evaluate:hp_defense-text", "attack:vanilla",
                      "attack:ga-multimodal", "attack:hp_defense-text", "report:all"}
    attack_run = next(r for r in find_runs(params.tracking, stage="attack") if r.data.tags["model"] == "ga-multimodal")
    cell = attacks["ga-multimodal"]["head_projection"]["image"]
    assert attack_run.data.metrics["attack.head_projection.image.success"] == pytest.approx(cell["success"])
    assert attack_run.data.metrics["attack.head_projection.image.before"] == pytest.approx(cell["before"])
    evaluated = find_runs(params.tracking, stage="evaluate")
    ga_run = next(r for r in evaluated if r.data.tags["model"] == "ga-multimodal")
    assert ga_run.data.metrics["forget.image.mcq_acc"] == pytest.approx(
        json.loads((project / "metrics" / "ga-multimodal.json").read_text())["forget"]["image"]["mcq_acc"])
    from mlflow.tracking import MlflowClient

    unlearn_run = next(r for r in find_runs(params.tracking, stage="unlearn") if r.data.tags["model"] == "ga-multimodal")
    artifacts = [a.path for a in MlflowClient(params.tracking.uri).list_artifacts(unlearn_run.info.run_id,
                                                                                     "ga-multimodal")]
    assert "ga-multimodal/adapter_model.safetensors" in artifacts
    assert unlearn_run.data.tags["git_commit"] and unlearn_run.data.params["method.ga.lr"] == "0.001"
    assert unlearn_run.data.tags["git_source_edited"] in ("true", "false", "unknown")
    # what was forgotten and how the adapter was shaped, readable from the run alone
    assert unlearn_run.data.params["split.forget_percent"] == str(params.split.forget_percent)
    assert unlearn_run.data.params["lora.r"] == str(params.finetune.lora.r)


def _interrupted_evaluation_resumes(project: Path, capsys) -> None:
    """Evaluate stopped during generation, then run again: the multiple-choice batches come from the
    journal, not the model, and the outputs equal the uninterrupted run's byte for byte. A run on a broken
    split in between fails without touching the journal."""
    import mmunlearn.evaluation.engine as engine
    import mmunlearn.evaluation.run as run

    outputs = [project / "metrics" / "vanilla.json", project / "reports" / "predictions" / "vanilla.jsonl"]
    uninterrupted = [path.read_bytes() for path in outputs]
    journal = project / "checkpoints" / "evaluate" / "vanilla.jsonl"
    assert not journal.exists()  # a finished evaluation leaves nothing to resume
    batches_run: list[bool] = []  # for_generate of each batch the model really ran
    real_inputs = engine._inputs

    def counted(*args, **kwargs):
        batches_run.append(kwargs.get("for_generate", False))
        return real_inputs(*args, **kwargs)

    def stop(*args, **kwargs):
        raise KeyboardInterrupt

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(engine, "_inputs", counted)
        patch.setattr(run, "generate_replies", stop)
        assert run_cli(["evaluate", "--model", "vanilla"], capsys)[0] != 0
    assert journal.is_file() and batches_run and not any(batches_run)
    # a run on an unreadable split fails naming it and leaves the interrupted run's journal as it was
    forget_table = project / "data" / "splits" / "forget.parquet"
    table, interrupted = forget_table.read_bytes(), journal.read_bytes()
    forget_table.write_bytes(b"garbage")
    code, _, err = run_cli(["evaluate", "--model", "vanilla"], capsys)
    forget_table.write_bytes(table)
    assert code != 0 and "forget.parquet" in err and journal.read_bytes() == interrupted
    batches_run.clear()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(engine, "_inputs", counted)
        assert run_cli(["evaluate", "--model", "vanilla"], capsys)[0] == 0
    assert batches_run and all(batches_run)  # only generation ran again
    assert [path.read_bytes() for path in outputs] == uninterrupted
    assert not journal.exists()


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


def test_checkpoints_of_another_model_layout_or_code_are_not_resumed(tmp_path):
    import torch

    from mmunlearn.training.stages import prepare_checkpoints, run_fingerprint

    model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Linear(3, 1))
    same = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Linear(3, 1))
    wider = torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.Linear(4, 1))
    assert run_fingerprint(model) == run_fingerprint(same)  # weights' values do not matter
    assert run_fingerprint(model)["parameters"] != run_fingerprint(wider)["parameters"]
    frozen_head = run_fingerprint(model)
    model[1].weight.requires_grad_(False)  # e.g. the LM head no longer trained (modules_to_save)
    assert run_fingerprint(model)["parameters"] != frozen_head["parameters"]
    assert len(frozen_head["source"]) == 64 and "torch" in frozen_head["libraries"]

    folder = tmp_path / "ckpt"
    prepare_checkpoints(folder, {"lr": 1e-3, **frozen_head})
    (folder / "checkpoint-4").mkdir()
    prepare_checkpoints(folder, {"lr": 1e-3, **run_fingerprint(model)})
    assert not (folder / "checkpoint-4").exists()


def test_a_checkpoint_of_another_vanilla_or_split_is_not_resumed(tmp_path, monkeypatch):
    """The fingerprint held params, layout and code only: resuming after the vanilla was rebuilt or the
    split redrawn gave a model trained partly on each (reproduced by a kill, a change, a re-run)."""
    from mmunlearn.config import Params
    from mmunlearn.training.stages import prepare_checkpoints, read_inputs

    monkeypatch.chdir(tmp_path)
    for folder, name in (("models/base", "config.json"), ("models/vanilla", "adapter_config.json"),
                         ("data/splits", "split.json")):
        Path(folder).mkdir(parents=True)
        (Path(folder) / name).write_text("{}")
    params = Params()
    checkpoints = tmp_path / "checkpoints" / "ga-text"

    def interrupted_then_rerun(change) -> bool:
        prepare_checkpoints(checkpoints, {"inputs": read_inputs(params, ["vanilla"])})
        (checkpoints / "checkpoint-30").mkdir(exist_ok=True)
        change()
        prepare_checkpoints(checkpoints, {"inputs": read_inputs(params, ["vanilla"])})
        return (checkpoints / "checkpoint-30").is_dir()

    assert interrupted_then_rerun(lambda: None)  # nothing changed: resumed
    assert not interrupted_then_rerun(lambda: Path("models/vanilla/adapter_model.safetensors").write_bytes(b"new"))
    assert not interrupted_then_rerun(lambda: Path("data/splits/split.json").write_text('{"seed": 1}'))
    assert not interrupted_then_rerun(lambda: Path("models/base/config.json").write_text('{"v": 2}'))  # under it
