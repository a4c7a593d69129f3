"""The study's own stages on a model of a real checkpoint's shape: the real-model path, end to end, on a GPU.

    python benchmarks/real_shape_study.py --shape llava-1.5-7b --out DIR
    python benchmarks/real_shape_study.py --shape llava-toy --out DIR     # a CPU dry run of the same path

Builds a model of ``--shape`` (eval_throughput's SHAPES: LLaVA-1.5-7B's exact sizes, random weights,
nothing downloaded) and saves it as a checkpoint folder (safetensors, a LlavaProcessor on the study
tokenizer). Then runs the CLI stages on it, each in its own process as ``dvc repro`` runs them, with
the README's real-model settings (bfloat16 on a GPU, the paper's LoRA without the tiny default's
trained head and embeddings, QA pairs only, no celebrity rehearsal) and short budgets (``--epochs``):
finetune, unlearn (GA multimodal; NPO by name against the vanilla), evaluate (vanilla, GA), attack
(vanilla, GA). Prints each stage's wall time and peak GPU memory in use, then reads the MLflow runs
back through the client: where each computed (its ``host.accelerator`` tag), what memory it allocated
and reserved (``host.peak_*``), its steps, losses and forget-set scores.
Random weights answer nothing: the figures check that the path runs and where, not what it learns.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from eval_throughput import SHAPES, shaped_model  # noqa: E402

STAGES = (
    ("finetune", ["finetune"]),
    ("unlearn ga-multimodal", ["unlearn", "--method", "ga", "--modality", "multimodal"]),
    ("unlearn npo-text", ["unlearn", "--method", "npo", "--modality", "text"]),
    ("evaluate vanilla", ["evaluate", "--model", "vanilla"]),
    ("evaluate ga-multimodal", ["evaluate", "--model", "ga-multimodal"]),
    ("attack vanilla", ["attack", "--model", "vanilla"]),  # the pre-unlearning rates the next one compares with
    ("attack ga-multimodal", ["attack", "--model", "ga-multimodal"]),
)


def save_checkpoint(shape: str, params_file: Path, folder: Path, device: str) -> None:
    """The shaped model and its processor as ``save_pretrained`` writes a hub checkpoint."""
    import torch

    from mmunlearn.config import load_params
    from mmunlearn.models.study import load_study_model

    study = load_study_model(load_params(params_file))  # the study tokenizer and chat template
    model, processor = shaped_model(shape, study.processor, torch.device(device))
    model.save_pretrained(folder)  # safetensors, sharded as the hub's checkpoints are
    processor.save_pretrained(folder)


def study_params(params_file: Path, out: Path, checkpoint: Path, epochs: float, batch_size: int,
                 eval_batch_size: int, dtype: str) -> dict:
    """params.yaml with the README's real-model settings, short budgets, and every output under ``out``."""
    raw = yaml.safe_load(params_file.read_text(encoding="utf-8"))
    budget = {"epochs": epochs, "batch_size": batch_size, "save_steps": 10_000}
    raw["paths"].update({name: str(out / name) for name in ("models", "checkpoints", "metrics", "reports")})
    raw["tracking"].update({"uri": f"sqlite:///{out / 'mlflow.db'}", "artifact_root": str(out / "mlartifacts"),
                            "experiment": "real-shape"})
    raw["model"].update({"name": str(checkpoint), "dtype": dtype})
    raw["finetune"].update({**budget, "formats": ["generation"], "celebrity_rehearsal": 0.0, "warmup_steps": 0,
                            "lora": {**raw["finetune"]["lora"], "dropout": 0.05, "modules_to_save": []}})
    raw["finetune_retain"] = None
    raw["methods"]["ga"].update(budget)
    raw["methods"]["npo"].update({**budget, "reference": "vanilla"})
    raw["unlearn"].update({"methods": ["ga", "npo"], "defenses": []})
    raw["evaluation"]["batch_size"] = eval_batch_size
    return raw


class GpuMemory:
    """Peak GPU memory in use (nvidia-smi, every 0.5 s) while a stage's process runs; None without one."""

    def __init__(self):
        self.peak_mib, self._stop = None, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            try:
                used = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                                      capture_output=True, text=True, timeout=10).stdout.split()
                self.peak_mib = max([self.peak_mib or 0, *map(int, used)])
            except (OSError, ValueError, subprocess.TimeoutExpired):
                return
            self._stop.wait(0.5)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def run_stage(title: str, args: list[str], params_file: Path, log_file: Path) -> dict:
    command = [sys.executable, "-m", "mmunlearn", "--params", str(params_file), *args]
    start = time.perf_counter()
    with GpuMemory() as memory, log_file.open("a", encoding="utf-8") as log:
        log.write(f"\n=== {title}: {' '.join(command)}\n")
        log.flush()
        code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT).returncode
    result = {"stage": title, "seconds": round(time.perf_counter() - start, 1), "exit": code,
              "peak_gpu_mib": memory.peak_mib}
    print(json.dumps(result), flush=True)
    return result


def mlflow_summary(params_file: Path) -> list[dict]:
    """Each stage's run as the MLflow client reads it back."""
    import mlflow

    from mmunlearn.config import load_params

    params = load_params(params_file)
    mlflow.set_tracking_uri(params.tracking.uri)
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name(params.tracking.experiment)
    rows = []
    for run in client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"]):
        metrics = run.data.metrics
        wanted = [k for k in sorted(metrics) if k.startswith(("train.", "host.peak")) or k.endswith(".success")
                  or (k.startswith("forget.") and k.rsplit(".", 1)[1] in ("mcq_acc", "rouge_l"))]
        rows.append({"run": run.info.run_name, "accelerator": run.data.tags.get("host.accelerator"),
                     "artifacts": [a.path for a in client.list_artifacts(run.info.run_id)],
                     "metrics": {k: round(metrics[k], 4) for k in wanted}})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--shape", default="llava-1.5-7b", choices=sorted(SHAPES))
    parser.add_argument("--out", required=True, help="scratch folder: checkpoint, models, MLflow store, logs")
    parser.add_argument("--epochs", type=float, default=0.05, help="every training stage's budget")
    parser.add_argument("--batch_size", type=int, default=8, help="training batch")
    parser.add_argument("--eval_batch_size", type=int, default=64)
    parser.add_argument("--stages", default=",".join(title for title, _ in STAGES),
                        help="comma-separated stage titles to run, in order")
    args = parser.parse_args(argv)

    import torch

    from mmunlearn.config import load_params
    from mmunlearn.models.loading import compute_device

    device = compute_device()  # where the stages will compute (MMUNLEARN_DEVICE, else the GPU if any)
    on_gpu = device.type == "cuda"
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    checkpoint, params_file, log_file = out / "checkpoint", out / "params.yaml", out / "stages.log"
    if not (checkpoint / "config.json").is_file():
        start = time.perf_counter()
        save_checkpoint(args.shape, Path(args.params), checkpoint, str(device))
        print(json.dumps({"stage": f"build + save {args.shape}", "seconds": round(time.perf_counter() - start, 1)}),
              flush=True)
    raw = study_params(Path(args.params), out, checkpoint, args.epochs, args.batch_size, args.eval_batch_size,
                       "bfloat16" if on_gpu else "float32")
    params_file.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    load_params(params_file)  # a settings mistake fails here, not in every stage
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    wanted, results = args.stages.split(","), []
    summary = {"shape": args.shape, "device": torch.cuda.get_device_name(device) if on_gpu else "cpu",
               "stages": results}
    for title, command in STAGES:
        if title in wanted:
            results.append(run_stage(title, command, params_file, log_file))
            (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")  # so far
    summary["mlflow"] = mlflow_summary(params_file)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(summary["mlflow"], indent=1))
    return 0 if all(r["exit"] == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
