"""Training steps per second of the tiny default's two training stages, as they train.

Builds the tiny model from params.yaml (untrained: a step costs the same whatever the weights), takes
the stage's own examples (``base``: the public figures and the vocabulary; ``finetune``: the vanilla's
recipe, with its LoRA adapter), encodes them, draws batches as the stage's Trainer does (random, their
padding included; length-grouped only under ``group_by_length``; conversations apart from single turns), and
times AdamW steps of the answer NLL after some warm-up steps. ``--threads`` sets torch's intra-op
threads; ``--compile`` times the same steps under ``torch.compile`` (its compile time is printed apart).
The README's figures on where the 2-core time goes were measured with it.

    .venv/bin/python benchmarks/train_step_time.py --stage finetune --steps 200
"""

from __future__ import annotations

import argparse
import time

import torch

from mmunlearn.config import load_params
from mmunlearn.data.schema import load_benchmark
from mmunlearn.data.splits import load_split
from mmunlearn.methods.common import answer_nll
from mmunlearn.models.base import base_examples, untrained_tiny
from mmunlearn.models.loading import add_lora
from mmunlearn.training.stages import encode_all, finetune_examples
from mmunlearn.training.trainer import Collator, EncodedDataset, GroupedBatchSampler


def stage_model_and_examples(params, stage: str):
    """The tiny model as ``stage`` trains it (LoRA for finetune) and that stage's examples."""
    benchmark = load_benchmark(params.paths.benchmark)
    model, processor = untrained_tiny(params, benchmark)
    if stage == "base":
        return model, processor, base_examples(params, benchmark), params.base
    split = load_split(params.paths.splits)
    examples = finetune_examples(params.finetune, split.forget + split.retain, split)
    return add_lora(model, params.finetune.lora), processor, examples, params.finetune


def batches(dataset: EncodedDataset, batch_size: int, collator: Collator, seed: int, by_length: bool):
    # Without lengths the sampler is a seeded random order of whole batches: random batches, as the stage
    # draws them. Grouping by length here alone timed the vanilla's steps 20% faster than the stage ran them.
    lengths = dataset.lengths if by_length else None
    order = list(GroupedBatchSampler(dataset.is_conversation, batch_size, seed, lengths))
    for start in range(0, len(order) - batch_size + 1, batch_size):
        yield collator([dataset[index] for index in order[start:start + batch_size]])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", choices=["base", "finetune"], default="finetune")
    parser.add_argument("--steps", type=int, default=200, help="timed steps")
    parser.add_argument("--warmup", type=int, default=20, help="untimed steps first")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the stage's")
    parser.add_argument("--compile", choices=["none", "model", "layers"], default="none",
                        help="torch.compile the whole model, or each transformer layer (dynamic shapes)")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    params = load_params(args.params)
    torch.manual_seed(0)
    model, processor, examples, config = stage_model_and_examples(params, args.stage)
    dataset = EncodedDataset(encode_all(processor, examples, f"{args.stage}: encoding"))
    batch_size = args.batch_size or config.batch_size
    model.train()
    trained = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=config.lr, betas=(0.9, config.adam_beta2), weight_decay=0.0)
    forward = model
    if args.compile == "model":
        forward = torch.compile(model, dynamic=True)
    elif args.compile == "layers":  # regional: the layers repeat, and LLaVA's image merging stays eager
        model.config.get_text_config().use_cache = False  # a KV cache in training recompiles every step
        torch._dynamo.config.recompile_limit = 64  # one compiled variant per layer instance
        for module in model.modules():
            if type(module).__name__.endswith(("DecoderLayer", "EncoderLayer")):
                module.compile(dynamic=True)

    def step(batch) -> float:
        loss = answer_nll(forward, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trained, config.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    stream = batches(dataset, batch_size, Collator(processor.tokenizer.pad_token_id), config.seed,
                     config.group_by_length)
    started = time.perf_counter()
    for _ in range(args.warmup):
        step(next(stream))
    warm = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(args.steps):
        step(next(stream))
    elapsed = time.perf_counter() - started
    print(f"{args.stage}: {len(dataset)} examples, batch {batch_size}, threads {torch.get_num_threads()}, "
          f"compile {args.compile}, length-grouped {config.group_by_length}")
    print(f"warm-up {args.warmup} steps: {warm:.1f} s; {args.steps} steps: {args.steps / elapsed:.2f} steps/s "
          f"({1000 * elapsed / args.steps:.1f} ms/step)")


if __name__ == "__main__":
    main()
