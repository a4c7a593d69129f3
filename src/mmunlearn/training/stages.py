"""The ``finetune`` and ``unlearn`` stages, and the training helper the ``base`` stage shares.

Each stage: build examples from the split, encode them (answer-only labels), train through the one
Trainer with the stage's objective, write the result atomically, and log the run to MLflow. Under a
multi-process launcher (torchrun / deepspeed) every rank trains; only the main one writes and logs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from mmunlearn.atomic import atomic_dir
from mmunlearn.config import FinetuneConfig, MethodConfig, Params, TrainConfig, model_id
from mmunlearn.models.prompts import encode_prompts
from mmunlearn.models.study import MODEL_FOLDER_MARKS
from mmunlearn.training.arguments import training_arguments
from mmunlearn.training.data import TextExample, encode_example
from mmunlearn.training.trainer import Collator, EncodedDataset, ForgetRetainDataset, LossFn, run_training

log = logging.getLogger(__name__)
FINGERPRINT_FILE = "fingerprint.json"
UNLEARNING_MODALITY = {"multimodal": "image", "text": "text"}  # unlearn.modalities → the pairs' Modality


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch before a stage creates weights (LoRA init draws from torch's RNG)."""
    from transformers import set_seed

    set_seed(seed)


def is_main_process() -> bool:
    """True unless this is a non-zero rank of a torchrun / deepspeed launch."""
    return int(os.environ.get("RANK", "0")) == 0


def prepare_checkpoints(folder: Path, fingerprint: dict) -> None:
    """Keep ``folder``'s checkpoints only if they were made with the same settings; otherwise start over.

    A checkpoint left by an interrupted run resumes; one made under other params (a changed lr, other
    data) would silently resume the wrong training, so it is wiped.
    """
    marker = folder / FINGERPRINT_FILE
    wanted = json.dumps(fingerprint, sort_keys=True, default=str)
    if is_main_process():
        if folder.exists() and (not marker.is_file() or marker.read_text() != wanted):
            log.info("discarding checkpoints in %s made with other settings", folder)
            shutil.rmtree(folder)
        folder.mkdir(parents=True, exist_ok=True)
        marker.write_text(wanted)


def run_fingerprint(model) -> dict:
    """What, besides params and data, decides whether a checkpoint belongs to this run: the model's
    parameter layout (names, shapes, dtypes, which are trained), the library versions and the project's
    source. A checkpoint left by other code once resumed with missing keys and only a warning."""
    from mmunlearn.journal import source_fingerprint

    layout = "\n".join(f"{name}:{tuple(p.shape)}:{p.dtype}:{p.requires_grad}" for name, p in model.named_parameters())
    return {"parameters": hashlib.sha256(layout.encode()).hexdigest(), **source_fingerprint()}


def read_inputs(params: Params, models: list[str | None]) -> dict:
    """Fingerprints of a training stage's inputs: the study models it loads (``None``: the base) and the
    split. Resuming a checkpoint made on another vanilla or forget set gave a model trained partly on each."""
    from mmunlearn.journal import files_fingerprint
    from mmunlearn.models.study import model_fingerprint

    return {"models": [model_fingerprint(params, name) for name in models],
            "split": files_fingerprint(params.paths.splits)}


def encode_all(processor, examples: list[TextExample], desc: str, labels_on: str = "answer",
               end_label: bool = True) -> list[dict]:
    single_turn = [index for index, e in enumerate(examples) if not e.context]  # conversations: one at a time
    prompts = dict(zip(single_turn, encode_prompts(processor, [(examples[i].user_text, examples[i].image_png)
                                                               for i in single_turn])))
    return [encode_example(processor, e, labels_on=labels_on, prompt=prompts.get(index), end_label=end_label)
            for index, e in tqdm(enumerate(examples), desc=desc, total=len(examples), unit="example", leave=False)]


def _loss_summary(trainer) -> dict[str, float]:
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    summary = {"train.steps": float(trainer.state.global_step)}
    if losses:
        summary.update({"train.first_loss": float(losses[0]), "train.last_loss": float(losses[-1])})
    return summary


def _gathered_state_dict(trainer):
    """The trained weights on the main process, gathered from ZeRO-3 shards (every rank must call this)."""
    if getattr(trainer, "is_deepspeed_enabled", False):
        return trainer.accelerator.get_state_dict(trainer.deepspeed)
    return None


def train_on_examples(params: Params, stage: str, model_name: str, model, dataset, config: TrainConfig,
                      loss_fn: LossFn, log_params: dict, save: Callable[[Path, dict | None], None],
                      target: Path, pad_token_id: int, inputs: dict | None = None) -> None:
    """Train ``model`` on an encoded ``dataset``, then save it to ``target`` (main process only).
    ``inputs``: fingerprints of what the stage read (the model it starts from, the split): a checkpoint
    resumes only for the same ones."""
    from mmunlearn import tracking

    checkpoints = params.paths.checkpoints / model_name
    prepare_checkpoints(checkpoints, {"stage": stage, "params": log_params, "examples": len(dataset),
                                      "inputs": inputs or {}, **run_fingerprint(model)})
    args = training_arguments(config, checkpoints)
    main = is_main_process()
    run = (tracking.stage_run(params.tracking, stage, model_name, log_params, params.paths.data_dvc) if main
           else contextlib.nullcontext())
    with run:
        trainer = run_training(model, dataset, Collator(pad_token_id), loss_fn, args)
        state_dict = _gathered_state_dict(trainer)
        if main:
            tracking.log_metrics({**_loss_summary(trainer), "train.examples": float(len(dataset))})
            with atomic_dir(target, MODEL_FOLDER_MARKS) as staging:
                save(staging, state_dict)
            tracking.log_artifacts(target, model_name)
            shutil.rmtree(checkpoints, ignore_errors=True)  # done: nothing left to resume
    if main:
        log.info("%s: wrote %s", stage, target)


def finetune_examples(config: FinetuneConfig, people, split) -> list[TextExample]:
    """The fine-tuning examples of ``people`` (distractors drawn from every fictitious profile), plus a
    ``celebrity_rehearsal`` fraction of the public figures' examples in the same formats (a fixed draw)."""
    import random

    from mmunlearn.training.examples import packed_conversations, recipe_examples, value_pools

    examples = recipe_examples(people, config, value_pools(split.forget + split.retain))
    if config.celebrity_rehearsal > 0:  # own value pools: a celebrity's options are other celebrities' values
        public = recipe_examples(split.celebrity, config, seed=config.seed + 1)
        share = round(config.celebrity_rehearsal * len(public))
        kept = random.Random(config.seed + 2).sample(range(len(public)), share)
        examples += [public[index] for index in sorted(kept)]
    return packed_conversations(examples, config.conversation_turns, config.seed + 3, config.conversation_share)


def finetune(params: Params, subset: str = "all") -> Path:
    """LoRA on the fictitious profiles: every one (the vanilla model), or the retain set only (NPO's reference)."""
    from mmunlearn.data.splits import load_split
    from mmunlearn.methods.common import answer_nll
    from mmunlearn.models.loading import add_lora, save_adapter
    from mmunlearn.models.study import load_study_model

    config = params.finetune if subset == "all" else params.retain_finetune()
    seed_everything(config.seed)
    split = load_split(params.paths.splits)
    people = split.forget + split.retain if subset == "all" else split.retain
    name = "vanilla" if subset == "all" else "retain"
    loaded = load_study_model(params)
    model = add_lora(loaded.model, config.lora)
    examples = finetune_examples(config, people, split)
    dataset = EncodedDataset(encode_all(loaded.processor, examples, f"{name}: encoding"))
    target = params.paths.models / name
    train_on_examples(params, "finetune", name, model, dataset, config, answer_nll,
                      log_params={"model": params.model.model_dump(mode="json"),
                                  "finetune": config.model_dump(mode="json"), "subset": subset,
                                  "split": params.split.model_dump(mode="json")},
                      save=lambda folder, state: save_adapter(model, folder, state),
                      target=target, pad_token_id=loaded.processor.tokenizer.pad_token_id,
                      inputs=read_inputs(params, [None]))
    return target


def _attach_reference_logprobs(encoded: list[dict], reference_model, pad_token_id: int, batch_size: int) -> None:
    """Store log π_ref(answer | prompt) in each encoded example (computed once, before training)."""
    import torch

    from mmunlearn.methods.common import sequence_logprobs
    from mmunlearn.training.data import collate, on_device

    device = next(reference_model.parameters()).device
    for start in tqdm(range(0, len(encoded), batch_size), desc="reference log-probabilities", leave=False):
        chunk = encoded[start:start + batch_size]
        batch = on_device(collate(chunk, pad_token_id), device)
        with torch.no_grad():
            logprobs, _ = sequence_logprobs(reference_model, batch)
        for example, value in zip(chunk, logprobs):
            example["reference_logprob"] = value.detach().to("cpu", copy=True)  # the Trainer moves batches itself


@contextlib.contextmanager
def _reference_model(params: Params, config: MethodConfig, model):
    """π_ref: the retain-only model (loaded for this and released after), or the vanilla model."""
    from mmunlearn.methods.common import frozen_reference
    from mmunlearn.models.loading import place
    from mmunlearn.models.study import load_study_model

    if config.reference == "retain":
        yield place(load_study_model(params, "retain").model).eval()
    else:
        with frozen_reference(model) as reference:  # the fresh adapter off: exactly the vanilla model
            yield reference


def _with_reference_logprobs(params: Params, config: MethodConfig, model, pad_token_id: int,
                             parts: list[list[dict]]) -> None:
    with _reference_model(params, config, model) as reference:
        for part in parts:
            _attach_reference_logprobs(part, reference, pad_token_id, config.batch_size)


@dataclass
class UnlearningJob:
    """Everything one unlearning run trains on: the model with a fresh adapter, its data and loss."""

    model: object
    processor: object
    dataset: ForgetRetainDataset
    loss: LossFn
    pad_token_id: int


def check_unlearning_modality(modality: str) -> None:
    from mmunlearn.errors import ConfigError

    if modality not in UNLEARNING_MODALITY:
        raise ConfigError(f"--modality {modality!r}: expected one of {sorted(UNLEARNING_MODALITY)}")


def prepare_unlearning(params: Params, method: str, config: MethodConfig, modality: str) -> UnlearningJob:
    """A fresh LoRA adapter on the vanilla weights (vanilla adapter merged in), the forget (and retain)
    examples of one unlearning modality, and the method's composed loss — ready to train.

    ``config`` may differ from ``params.methods[method]`` (a tuning trial's hyper-parameters).
    """
    from mmunlearn.data.schema import Modality
    from mmunlearn.data.splits import load_split
    from mmunlearn.errors import ConfigError, DataError
    from mmunlearn.methods import composed_loss
    from mmunlearn.models.loading import add_lora, merge_adapter, place
    from mmunlearn.models.study import load_study_model
    from mmunlearn.training.examples import ALTERNATIVES, recipe_examples, value_pools, with_prompt_prefixes

    loss = composed_loss(params, method)
    if loss.reference_logprobs and config.reference == "retain" and not (params.paths.models / "retain").is_dir():
        raise ConfigError(f"{params.paths.models / 'retain'}: not found; methods.{method}.reference: retain needs "
                          "`mmunlearn finetune --subset retain` first")

    seed_everything(config.seed)
    split = load_split(params.paths.splits)
    pools = value_pools(split.forget + split.retain)
    pairs_modality = Modality(UNLEARNING_MODALITY[modality])

    def examples_of(people):
        return recipe_examples(people, config, pools, pairs_modality)

    forget_examples = with_prompt_prefixes(examples_of(split.forget), config.prompt_prefixes)
    if not forget_examples:  # was a sampler's "num_samples=0" traceback once the run had started
        raise DataError(f"{params.paths.splits}: no forget-set pair to unlearn with methods.{method} in the {modality} "
                        f"modality (formats {list(config.formats or ())}): the fine-tuning pairs ask in another "
                        "modality or lack what the formats need (an imported release's pairs all show the face)")
    vanilla = load_study_model(params, "vanilla")
    processor, pad_token_id = vanilla.processor, vanilla.processor.tokenizer.pad_token_id
    # on the compute device already (the Trainer would move it there): the reference log-probabilities
    # below run on it too
    saved = f"methods.{method}.modules_to_save" if config.modules_to_save is not None else "finetune.lora.modules_to_save"
    model = place(add_lora(merge_adapter(vanilla.model), config.lora(params.finetune.lora),
                           ("finetune.lora.target_modules", saved)))
    try:
        loss.check_model(model)
    except ValueError as exc:  # before any checkpoint or run is started
        raise ConfigError(f"{params.source}: methods.{method}.{exc}") from None
    name = model_id(method, modality)

    # MLLMU-Bench's forget batches end with the answer (its LLaVA collate adds no EOS): ascent on the EOS
    # too taught the model never to end a reply
    forget = encode_all(processor, forget_examples, f"{name}: encoding forget", config.labels_on, config.forget_eos)
    alternative = (encode_all(processor, ALTERNATIVES[loss.alternative](forget_examples, config.seed, pools),
                              f"{name}: encoding alternatives", config.labels_on, config.forget_eos)
                   if loss.alternative else None)
    retain = encode_all(processor, examples_of(split.retain), f"{name}: encoding retain") if loss.needs_retain else []
    if loss.reference_logprobs:
        _with_reference_logprobs(params, config, model, pad_token_id, [forget] + ([alternative] if alternative else []))
    dataset = ForgetRetainDataset(forget, retain, seed=config.seed, alternative=alternative)
    return UnlearningJob(model, processor, dataset, loss, pad_token_id)


def unlearn(params: Params, method: str, modality: str) -> Path:
    """Unlearn the forget set from the vanilla model with ``method``, fed in one unlearning modality.

    A fresh LoRA adapter is trained on top of the vanilla weights (vanilla adapter merged in); a
    method that trains nothing (Prompting) only records its system prompt.
    """
    from mmunlearn import tracking
    from mmunlearn.errors import ConfigError
    from mmunlearn.models.loading import save_adapter
    from mmunlearn.models.study import write_stack

    if method not in params.methods:
        raise ConfigError(f"{params.source}: methods.{method}: no such method (have: {sorted(params.methods)})")
    check_unlearning_modality(modality)
    config: MethodConfig = params.methods[method]
    name = model_id(method, modality)
    target = params.paths.models / name
    # the split and the adapter's LoRA too: a run read alone must say what was forgotten and how it was trained
    log_params = {"model": params.model.model_dump(mode="json"), "method": {method: config.model_dump(mode="json")},
                  "unlearn": {"modality": modality}, "split": params.split.model_dump(mode="json"),
                  "lora": config.lora(params.finetune.lora).model_dump(mode="json")}
    stack = {"on_top_of": "vanilla", "system_prompt": config.system_prompt, "method": method, "modality": modality}
    if config.forget is None:  # evaluation-time method: nothing to train
        if is_main_process():
            with tracking.stage_run(params.tracking, "unlearn", name, log_params, params.paths.data_dvc):
                with atomic_dir(target, MODEL_FOLDER_MARKS) as staging:
                    write_stack(staging, adapter=False, **stack)
        return target
    job = prepare_unlearning(params, method, config, modality)

    def save(folder: Path, state: dict | None) -> None:
        save_adapter(job.model, folder, state)
        write_stack(folder, adapter=True, **stack)

    read = ["vanilla"] + (["retain"] if job.loss.reference_logprobs and config.reference == "retain" else [])
    train_on_examples(params, "unlearn", name, job.model, job.dataset, config, job.loss, log_params=log_params,
                      save=save, target=target, pad_token_id=job.pad_token_id,
                      inputs=read_inputs(params, read))  # the adapter's LoRA is in log_params, fingerprinted too
    return target
