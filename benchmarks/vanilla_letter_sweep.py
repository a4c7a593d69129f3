"""How fast does a vanilla recipe learn to answer the fictitious profiles by letter? One recipe per run.

    python benchmarks/vanilla_letter_sweep.py NAME --train lora --modules_to_save lm_head,embed_tokens \
        --formats generation,cloze,mcq --drills 8 --lr 2e-3 --steps 6000 --eval_every 1000 --out DIR
    python benchmarks/vanilla_letter_sweep.py NAME --study --set mcq_drills=8 --set lora.alpha=32 --out DIR

`--study` trains the study's own recipe instead: `params.yaml: finetune` with `--set` changes (the
stage's examples, drawn once, with its celebrity rehearsal; its epochs, batch, lr schedule and Adam
β2), and ignores the recipe flags above it.

Fine-tunes the study's base (params.yaml, `models/base`) on every fictitious profile, drawing fresh
drills each epoch, and every `--eval_every` steps scores the letter of every evaluation multiple-choice
question (the `fast` protocol's scoring) per set and modality. Each evaluation is one JSON line in
`DIR/results.jsonl` (several runs may share the file). It trains with a plain loop, not the study's
Trainer, so that many recipes can share one GPU; nothing is saved. `--rehearsal F` makes F of each
epoch's examples the base's own (`models.base.base_examples`: public figures, vocabulary).

Measured on one H200 with the scratch form of this script (8 runs side by side, batch 16; forget /
retain letter MCQ, image / text, chance 0.25):
- LoRA (every linear layer + the LM head), r 64, lr 2e-3, 4 plain + 4 checked drills: at chance
  after 6,000 steps (r 16, 2-8 drills: the same in an earlier sweep).
- The same LoRA with the token embeddings trained too (`--modules_to_save lm_head,embed_tokens`),
  8 drills: 0.68 / 0.85 and 0.56 / 0.86 at 6,000 steps; at batch 32, 0.58 / 0.80 and 0.51 / 0.70 at 2,000.
- All weights, 8 drills: lr 5e-4 0.85 / 0.85 and 0.77 / 0.84 at 7,000 steps; lr 1e-3 0.65 / 0.90 and
  0.67 / 0.86 at 8,000; lr 2e-3 is slow (retain by name 0.53 at 6,000) and 3e-3 stays at chance.
  Without rehearsal the public figures' text MCQ falls from 0.92 to 0.33-0.55; rehearsal at 0.3 keeps
  it at 0.86-0.94 and slows the letters.

With `--study` (the study's recipe at batch 32, celebrity rehearsal 0.3): 5 drills, constant lr, 2 epochs
0.60 / 0.70 and 0.55 / 0.72; 8 drills with a linear decay over 2.5 epochs (the default since) 0.75-0.85 /
0.85-0.93 and 0.80-0.82 / 0.85-0.90 over four seeds (`--set seed=N`).
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections import defaultdict
from pathlib import Path

import torch
from transformers import get_scheduler

from mmunlearn.config import load_params, overlay
from mmunlearn.data.schema import Task, load_benchmark
from mmunlearn.data.splits import load_split
from mmunlearn.evaluation.engine import score_options
from mmunlearn.evaluation.metrics import predicted_letter
from mmunlearn.evaluation.run import questions_of
from mmunlearn.models.base import base_examples
from mmunlearn.models.loading import add_lora
from mmunlearn.models.study import load_study_model
from mmunlearn.training.data import collate, on_device
from mmunlearn.training.examples import build_examples, value_pools
from mmunlearn.training.stages import encode_all, finetune_examples


# The flags a --study run takes from the recipe instead, and the recipe key that sets each (--set KEY=VALUE).
RECIPE_FLAGS = {"lr": "lr", "batch": "batch_size", "warmup": "warmup_steps", "steps": "epochs"}
RECIPE_DEFAULTS = {"lr": 1e-3, "batch": 16, "warmup": 200, "steps": 6000}


def parse_args(argv: list[str] | None = None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", help="the recipe's name in the results")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--train", choices=("lora", "all"), default="lora", help="LoRA adapter or all weights")
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--modules_to_save", default="lm_head", help="comma-separated; trained in full beside LoRA")
    parser.add_argument("--formats", default="generation,cloze,mcq")
    parser.add_argument("--drills", type=int, default=2, help="fresh letter drills per pair and epoch")
    parser.add_argument("--drill_modality", choices=("image", "text"), default=None)
    parser.add_argument("--rehearsal", type=float, default=0.0, help="the base's examples' share of each epoch")
    parser.add_argument("--lr", type=float, default=None, help="default 1e-3")
    parser.add_argument("--batch", type=int, default=None, help="default 16")
    parser.add_argument("--warmup", type=int, default=None, help="default 200")
    parser.add_argument("--steps", type=int, default=None, help="default 6000")
    parser.add_argument("--eval_every", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("."))
    parser.add_argument("--study", action="store_true", help="train params.yaml's finetune recipe (with --set)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="with --study: change finetune.KEY (dotted, e.g. lora.alpha=32; VALUE is YAML)")
    args = parser.parse_args(argv)
    given = [flag for flag in RECIPE_FLAGS if getattr(args, flag) is not None]
    if args.study and given:  # the recipe decides them; silently ignoring a flag would mislabel the run
        parser.error(f"--study trains params.yaml's recipe: instead of --{', --'.join(given)} use --set "
                     + ", --set ".join(f"{RECIPE_FLAGS[flag]}=..." for flag in given))
    for flag, default in RECIPE_DEFAULTS.items():
        if getattr(args, flag) is None:
            setattr(args, flag, default)
    return args


def study_recipe(params, changes: list[str]):
    """``params.finetune`` with each KEY=VALUE change laid over it (validated like params.yaml)."""
    import yaml

    settings = params.finetune.model_dump()
    for change in changes:
        key, _, value = change.partition("=")
        nested = yaml.safe_load(value)
        for part in reversed(key.split(".")):
            nested = {part: nested}
        settings = overlay(settings, nested)  # as finetune_retain is laid over finetune
    return type(params.finetune).model_validate(settings)


def letter_accuracy(model, processor, questions) -> dict[str, float]:
    model.eval()
    with torch.no_grad():
        scores = score_options(model, processor, [q.request for q in questions], 128)
    model.train()
    hits = defaultdict(list)
    for question, score in zip(questions, scores):
        hits[f"{question.set_name}/{question.item.modality}"].append(predicted_letter(score) == question.item.correct)
    return {cell: round(sum(v) / len(v), 3) for cell, v in sorted(hits.items())}


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    params = load_params(args.params)
    split = load_split(params.paths.splits)
    people = split.forget + split.retain
    pools = value_pools(people)
    loaded = load_study_model(params)
    processor, model = loaded.processor, loaded.model
    recipe = study_recipe(params, args.set) if args.study else None
    if recipe is not None:
        model = add_lora(model, recipe.lora)
    elif args.train == "lora":
        trained_in_full = tuple(filter(None, args.modules_to_save.split(",")))
        settings = params.finetune.lora.model_copy(update={"r": args.rank, "alpha": args.rank,
                                                           "modules_to_save": trained_in_full})
        model = add_lora(model, settings)
    model.to(device).train()
    formats = args.formats.split(",")
    public = []
    if args.rehearsal > 0 and recipe is None:
        public = encode_all(processor, base_examples(params, load_benchmark(params.paths.benchmark)), "public figures")
    questions = [q for q in questions_of(split) if q.item.task is Task.MCQ]
    trainable = [p for p in model.parameters() if p.requires_grad]
    if recipe is not None:  # the stage's examples (drawn once) and the Trainer's optimiser and schedule
        fixed = encode_all(processor, finetune_examples(recipe, people, split), "encoding")
        args.batch, args.steps = recipe.batch_size, int(len(fixed) // recipe.batch_size * recipe.epochs)
        optimizer = torch.optim.AdamW(trainable, lr=recipe.lr, betas=(0.9, recipe.adam_beta2), weight_decay=0.0)
        schedule = get_scheduler(recipe.lr_schedule, optimizer, num_warmup_steps=recipe.warmup_steps,
                                 num_training_steps=args.steps)
    else:
        optimizer = torch.optim.AdamW(trainable, lr=args.lr, betas=(0.9, 0.98), weight_decay=0.0)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / args.warmup))
    args.out.mkdir(parents=True, exist_ok=True)

    def report(step: int) -> None:
        row = {"name": args.name, "step": step, **letter_accuracy(model, processor, questions)}
        print(json.dumps(row), flush=True)
        with open(args.out / "results.jsonl", "a") as results:
            results.write(json.dumps(row) + "\n")

    step, epoch, start = 0, 0, time.time()
    report(0)
    while step < args.steps:
        if recipe is not None:
            epoch_examples = list(fixed)
        else:
            epoch_examples = encode_all(processor, build_examples(people, formats, args.drills, args.seed + epoch,
                                                                  pools, drill_modality=args.drill_modality),
                                        "encoding")
        rehearsed = round(len(epoch_examples) * args.rehearsal / (1 - args.rehearsal)) if public else 0
        epoch_examples += [rng.choice(public) for _ in range(rehearsed)]
        rng.shuffle(epoch_examples)
        for first in range(0, len(epoch_examples) - args.batch + 1, args.batch):
            batch = on_device(collate(epoch_examples[first:first + args.batch], processor.tokenizer.pad_token_id),
                              device)
            model(**batch).loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, recipe.max_grad_norm if recipe else 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            if step % args.eval_every == 0 or step == args.steps:
                report(step)
                print(f"{args.name}: step {step}, {time.time() - start:.0f} s", flush=True)
            if step >= args.steps:
                break
        epoch += 1


if __name__ == "__main__":
    main()
