"""How fast does a vanilla recipe learn to answer the fictitious profiles by letter? One recipe per run.

    python benchmarks/vanilla_letter_sweep.py NAME --train lora --modules_to_save lm_head,embed_tokens \
        --formats generation,cloze,mcq --drills 8 --lr 2e-3 --steps 6000 --eval_every 1000 --out DIR

Fine-tunes the study's base (params.yaml, `models/base`) on every fictitious profile, drawing fresh
drills each epoch, and every `--eval_every` steps scores the letter of every evaluation multiple-choice
question (the `fast` protocol's scoring) per set and modality. Each evaluation is one JSON line in
`DIR/results.jsonl` (several runs may share the file). It trains with a plain loop, not the study's
Trainer, so that many recipes can share one GPU; nothing is saved. `--rehearsal F` makes F of each
epoch's examples the base's own (public figures in the base's formats, and its vocabulary).

Measured on one H200 with the scratch form of this script (8 runs side by side, batch 16; forget /
retain letter MCQ, image / text, chance 0.25):
- LoRA (every linear layer + the LM head), r 64, lr 2e-3, 4 plain + 4 checked drills: at chance
  after 6,000 steps (r 16, 2-8 drills: the same in an earlier sweep).
- The same LoRA with the token embeddings trained too (`--modules_to_save lm_head,embed_tokens`),
  8 drills: 0.68 / 0.85 and 0.56 / 0.86 at 6,000 steps; at batch 32, 0.58 / 0.80 and 0.51 / 0.70 at 2,000.
- All weights, 8 drills: lr 5e-4 0.85 / 0.85 and 0.77 / 0.84 at 7,000 steps; lr 1e-3 0.65 / 0.90 and
  0.67 / 0.86 at 8,000; lr 2e-3 is slow (retain by name 0.53 at 6,000) and 3e-3 stays at chance. Without rehearsal the public figures' text
  MCQ falls from 0.92 to 0.33-0.55; rehearsal at 0.3 keeps it at 0.86-0.94 and slows the letters.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections import defaultdict
from pathlib import Path

import torch

from mmunlearn.config import load_params
from mmunlearn.data.schema import Task, load_benchmark
from mmunlearn.data.splits import load_split
from mmunlearn.evaluation.engine import score_options
from mmunlearn.evaluation.metrics import predicted_letter
from mmunlearn.evaluation.run import questions_of
from mmunlearn.models.loading import add_lora
from mmunlearn.models.study import load_study_model
from mmunlearn.training.data import collate
from mmunlearn.training.examples import build_examples, value_pools, vocabulary_examples
from mmunlearn.training.stages import encode_all


def parse_args():
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
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--eval_every", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("."))
    return parser.parse_args()


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
    if args.train == "lora":
        trained_in_full = tuple(filter(None, args.modules_to_save.split(",")))
        settings = params.finetune.lora.model_copy(update={"r": args.rank, "alpha": args.rank,
                                                           "modules_to_save": trained_in_full})
        model = add_lora(model, settings)
    model.to(device).train()
    formats = args.formats.split(",")
    public = []
    if args.rehearsal > 0:
        public = encode_all(processor, build_examples(split.celebrity, params.base.formats, params.base.mcq_drills,
                                                      args.seed + 1, drill_modality=params.base.drill_modality)
                            + vocabulary_examples(load_benchmark(params.paths.benchmark).full + split.celebrity),
                            "public figures")
    questions = [q for q in questions_of(split) if q.item.task is Task.MCQ]
    trainable = [p for p in model.parameters() if p.requires_grad]
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
        epoch_examples = encode_all(processor, build_examples(people, formats, args.drills, args.seed + epoch, pools,
                                                              drill_modality=args.drill_modality), "encoding")
        rehearsed = round(len(epoch_examples) * args.rehearsal / (1 - args.rehearsal)) if public else 0
        epoch_examples += [rng.choice(public) for _ in range(rehearsed)]
        rng.shuffle(epoch_examples)
        for first in range(0, len(epoch_examples) - args.batch + 1, args.batch):
            batch = {k: v.to(device) for k, v in collate(epoch_examples[first:first + args.batch],
                                                          processor.tokenizer.pad_token_id).items()}
            model(**batch).loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            if step % args.eval_every == 0:
                report(step)
                print(f"{args.name}: step {step}, {time.time() - start:.0f} s", flush=True)
            if step >= args.steps:
                break
        epoch += 1


if __name__ == "__main__":
    main()
