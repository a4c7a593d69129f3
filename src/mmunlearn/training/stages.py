"""The ``finetune`` and ``unlearn@<method>`` stages, and the training helper the ``base`` stage shares.

Each stage: build examples from the split, encode them (answer-only labels), train through the one
Trainer with the stage's objective, write the result atomically, and log the run to MLflow.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path

from tqdm import tqdm

from mmunlearn.atomic import atomic_dir
from mmunlearn.config import MethodConfig, Params, TrainConfig
from mmunlearn.training.arguments import training_arguments
from mmunlearn.training.data import TextExample, encode_example
from mmunlearn.training.trainer import Collator, EncodedDataset, ForgetRetainDataset, LossFn, run_training

log = logging.getLogger(__name__)
FINGERPRINT_FILE = "fingerprint.json"


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch before a stage creates weights (LoRA init draws from torch's RNG)."""
    from transformers import set_seed

    set_seed(seed)


def prepare_checkpoints(folder: Path, fingerprint: dict) -> None:
    """Keep ``folder``'s checkpoints only if they were made with the same settings; otherwise start over.

    A checkpoint left by an interrupted run resumes; one made under other params (a changed lr, other
    data) would silently resume the wrong training, so it is wiped.
    """
    marker = folder / FINGERPRINT_FILE
    wanted = json.dumps(fingerprint, sort_keys=True, default=str)
    if folder.exists() and (not marker.is_file() or marker.read_text() != wanted):
        log.info("discarding checkpoints in %s made with other settings", folder)
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    marker.write_text(wanted)


def encode_all(processor, examples: list[TextExample], desc: str) -> list[dict]:
    return [encode_example(processor, e) for e in tqdm(examples, desc=desc, unit="example", leave=False)]


def _loss_summary(trainer) -> dict[str, float]:
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    summary = {"train.steps": float(trainer.state.global_step)}
    if losses:
        summary.update({"train.first_loss": float(losses[0]), "train.last_loss": float(losses[-1])})
    return summary


def train_on_examples(params: Params, stage: str, model_name: str, model, processor, examples: list[TextExample],
                      config: TrainConfig, loss_fn: LossFn, log_params: dict, save: Callable[[Path], None],
                      target: Path, retain_examples: list[TextExample] | None = None) -> None:
    """Train ``model`` on ``examples`` (paired with retain examples when given), then save to ``target``."""
    from mmunlearn import tracking

    encoded = encode_all(processor, examples, f"{stage}: encoding")
    if retain_examples is not None:
        dataset = ForgetRetainDataset(encoded, encode_all(processor, retain_examples, f"{stage}: encoding retain"),
                                      seed=config.seed)
    else:
        dataset = EncodedDataset(encoded)
    checkpoints = params.paths.checkpoints / model_name
    prepare_checkpoints(checkpoints, {"stage": stage, "params": log_params, "examples": len(encoded),
                                      "retain_examples": len(retain_examples or [])})
    args = training_arguments(config, checkpoints)
    with tracking.stage_run(params.tracking, stage, model_name, log_params, params.paths.data_dvc):
        trainer = run_training(model, dataset, Collator(processor.tokenizer.pad_token_id), loss_fn, args)
        tracking.log_metrics({**_loss_summary(trainer), "train.examples": float(len(encoded))})
        if trainer.is_world_process_zero():
            with atomic_dir(target) as staging:
                save(staging)
            tracking.log_artifacts(target, model_name)
            shutil.rmtree(checkpoints, ignore_errors=True)  # done: nothing left to resume
    log.info("%s: wrote %s", stage, target)


def finetune(params: Params) -> Path:
    """The vanilla model: a LoRA adapter trained on every fictitious profile (forget + retain)."""
    from peft import LoraConfig, get_peft_model

    from mmunlearn.data.splits import load_split
    from mmunlearn.methods.nll import answer_nll
    from mmunlearn.models.base import load_study_model
    from mmunlearn.models.loading import save_adapter
    from mmunlearn.training.examples import build_examples, value_pools

    config = params.finetune
    seed_everything(config.seed)
    split = load_split(params.paths.splits)
    people = split.forget + split.retain
    loaded = load_study_model(params)
    lora = LoraConfig(r=config.lora.r, lora_alpha=config.lora.alpha, lora_dropout=config.lora.dropout,
                      target_modules=config.lora.target_modules if isinstance(config.lora.target_modules, str)
                      else list(config.lora.target_modules), init_lora_weights="gaussian")
    model = get_peft_model(loaded.model, lora)
    examples = build_examples(people, config.formats, config.mcq_drills, config.seed, value_pools(people))
    target = params.paths.models / "vanilla"
    train_on_examples(params, "finetune", "vanilla", model, loaded.processor, examples, config, answer_nll,
                      log_params={"model": params.model.model_dump(mode="json"),
                                  "finetune": config.model_dump(mode="json")},
                      save=lambda folder: save_adapter(model, folder), target=target)
    return target


def unlearn(params: Params, method: str) -> Path:
    """Unlearn the forget set from the vanilla model with a composed method loss."""
    from mmunlearn.data.splits import load_split
    from mmunlearn.errors import ConfigError
    from mmunlearn.methods import compose
    from mmunlearn.models.base import load_study_model
    from mmunlearn.models.loading import save_adapter
    from mmunlearn.training.examples import build_examples, value_pools

    if method not in params.unlearn:
        raise ConfigError(f"params.yaml: unlearn.{method}: no such method (have: {sorted(params.unlearn)})")
    config: MethodConfig = params.unlearn[method]
    seed_everything(config.seed)
    try:
        loss = compose(config.forget, config.retain, config.forget_weight, config.retain_weight)
    except KeyError as exc:
        raise ConfigError(f"params.yaml: unlearn.{method}: {exc.args[0]}") from None
    split = load_split(params.paths.splits)
    pools = value_pools(split.forget + split.retain)
    loaded = load_study_model(params, "vanilla", trainable_adapter=True)
    forget = build_examples(split.forget, config.formats, config.mcq_drills, config.seed, pools)
    retain = build_examples(split.retain, config.formats, config.mcq_drills, config.seed, pools) if loss.needs_retain else []
    target = params.paths.models / method
    train_on_examples(params, "unlearn", method, loaded.model, loaded.processor, forget, config, loss,
                      log_params={"model": params.model.model_dump(mode="json"),
                                  "unlearn": {method: config.model_dump(mode="json")}},
                      save=lambda folder: save_adapter(loaded.model, folder), target=target,
                      retain_examples=retain)
    return target
