"""The GPU check of the real-model path (benchmarks/real_shape_study.py), dry-run on the CPU at toy sizes:
the CLI stages run on a hub-format checkpoint folder that is not the tiny default (float32 here,
bfloat16 on a GPU), and MLflow reads back where each computed."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, run_cli, write_params
from tests.test_stages import MICRO

pytestmark = pytest.mark.slow
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
import real_shape_study  # noqa: E402


def test_the_stages_run_on_a_checkpoint_folder_of_another_shape(project, monkeypatch):
    write_params(project, **{key: MICRO[key] for key in ("data", "model", "base")})
    for command in (["data", "synth"], ["split"], ["base"]):
        assert run_cli(command)[0] == 0, command
    monkeypatch.setenv("MMUNLEARN_DEVICE", "cpu")
    out = project / "real-shape"
    stages = ["finetune", "unlearn npo-text", "evaluate vanilla"]
    code = real_shape_study.main(["--params", "params.yaml", "--shape", "llava-toy", "--out", str(out),
                                  "--epochs", "0.05", "--stages", ",".join(stages)])
    summary = json.loads((out / "summary.json").read_text())
    assert code == 0 and [s["stage"] for s in summary["stages"]] == stages
    assert all(s["exit"] == 0 for s in summary["stages"]), (out / "stages.log").read_text()[-3000:]
    checkpoint = json.loads((out / "checkpoint" / "config.json").read_text())
    assert checkpoint["architectures"] == ["LlavaForConditionalGeneration"]
    assert checkpoint["text_config"]["vocab_size"] == 32064  # LLaVA-1.5's, not the study tokenizer's
    runs = {run["run"]: run for run in summary["mlflow"]}
    assert set(runs) == {"finetune:vanilla", "unlearn:npo-text", "evaluate:vanilla"}
    assert {run["accelerator"] for run in runs.values()} == {"none"}
    finetuned = runs["finetune:vanilla"]
    assert finetuned["metrics"]["train.steps"] > 0 and finetuned["artifacts"] == ["vanilla"]
    assert 0 <= runs["evaluate:vanilla"]["metrics"]["forget.text.mcq_acc"] <= 1
    assert runs["evaluate:vanilla"]["metrics"]["host.peak_rss_mib"] > 100  # each stage says what it needed
    adapter = json.loads((out / "models" / "vanilla" / "adapter_config.json").read_text())
    assert adapter["modules_to_save"] is None and adapter["lora_dropout"] == 0.05  # the paper's LoRA, as README says
