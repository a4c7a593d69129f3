"""Fine-tuning under DeepSpeed ZeRO-2 and ZeRO-3 with two CPU processes, launched as a user would: torchrun."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
import yaml

from mmunlearn.config import load_params
from mmunlearn.tracking import find_runs
from tests.conftest import REPO_ROOT, run_cli, write_params
from tests.test_stages import MICRO

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("zero", ["zero2", "zero3"])
def test_torchrun_zero_finetune_writes_one_adapter_and_one_run(project, capsys, zero):
    """ZeRO-3 with two processes failed the first backward pass (a gradient of shape [0] for a [128, 16]
    weight): the zero term that gives every parameter a gradient summed parameters already re-sharded."""
    config = REPO_ROOT / "configs" / "deepspeed" / f"{zero}.json"
    write_params(project, **{**MICRO, "finetune": {**MICRO["finetune"], "deepspeed": str(config), "logging_steps": 1,
                                                  "epochs": 2, "batch_size": 8, "lr": 0.01}})
    for command in (["data", "synth"], ["split"], ["base"]):
        assert run_cli(command, capsys)[0] == 0, command

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    with socket.socket() as probe:  # a free port: a fixed one failed when another run on the machine held it
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}",
              "-m", "mmunlearn", "finetune"]
    result = subprocess.run(launch, cwd=project, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stderr.count("finetune: wrote") == 1  # only rank 0 writes

    models = sorted(p.name for p in (project / "models").iterdir())
    assert models == ["base", "vanilla"]  # no staging folder left by the other rank
    assert (project / "models" / "vanilla" / "adapter_model.safetensors").is_file()
    params = load_params(project / "params.yaml")
    runs = find_runs(params.tracking, stage="finetune")
    assert len(runs) == 1
    metrics = runs[0].data.metrics
    assert metrics["train.last_loss"] < metrics["train.first_loss"]
    assert yaml.safe_load((project / "params.yaml").read_text())["finetune"]["deepspeed"] == str(config)

    code, _, err = run_cli(["evaluate", "--model", "vanilla"], capsys)  # the adapter loads for evaluation
    assert code == 0, err
