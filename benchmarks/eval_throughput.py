"""Evaluation throughput: our `fast` protocol against the official protocol, same model, same questions.

    python benchmarks/eval_throughput.py [--model vanilla] [--sets forget,test] [--limit N] [--device cpu]

`official` runs as eval.py runs it: one question at a time, a few-shot demonstration (with its face
for image questions) before multiple-choice and fill-in-the-blank questions, greedy decoding of up to
50 new tokens, stopping at end-of-sequence. `fast` scores every multiple-choice question's option
letters in batched forward passes and generates the other answers in length-bucketed batches (also
up to 50 new tokens). Prints both rates (questions per second), their ratio, peak memory and how often
the two protocols' multiple-choice predictions agree. Target on the default model, CPU: ratio >= 20.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time

import torch

from mmunlearn.config import load_params
from mmunlearn.data.schema import Task
from mmunlearn.data.splits import load_split
from mmunlearn.evaluation.metrics import predicted_letter
from mmunlearn.evaluation.official import OFFICIAL_MAX_NEW_TOKENS
from mmunlearn.evaluation.run import EvaluationSettings, fast_outputs, official_outputs, questions_of
from mmunlearn.models.loading import merge_adapter
from mmunlearn.models.study import load_study_model


def _peak_memory_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--model", default="vanilla", help="a model of the study (default: vanilla)")
    parser.add_argument("--sets", default="forget,test", help="comma-separated evaluated sets")
    parser.add_argument("--limit", type=int, default=0, help="at most this many questions (0: all)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)

    params = load_params(args.params)
    split = load_split(params.paths.splits)
    wanted = set(args.sets.split(","))
    questions = [q for q in questions_of(split) if q.set_name in wanted]
    questions = questions[:args.limit] if args.limit else questions
    device = torch.device(args.device)
    loaded = load_study_model(params, args.model)
    model, processor = merge_adapter(loaded.model).to(device), loaded.processor  # as the evaluate stage does
    settings = EvaluationSettings(params.evaluation.batch_size, OFFICIAL_MAX_NEW_TOKENS,
                                  demo_seed=params.evaluation.demo_seed)
    fast_outputs(model, processor, questions[:8], settings)  # warm-up (allocator, kernels), not timed

    timings, outputs = {}, {}
    for name, run in (("fast", lambda: fast_outputs(model, processor, questions, settings)),
                      ("official", lambda: official_outputs(model, processor, questions, split, settings))):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        outputs[name] = run()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        timings[name] = time.perf_counter() - start
    mcq = [i for i, q in enumerate(questions) if q.item.task is Task.MCQ]
    agree = sum(predicted_letter(outputs["fast"][i]) == outputs["official"][i] for i in mcq)
    fast_rate, official_rate = len(questions) / timings["fast"], len(questions) / timings["official"]
    print(f"model {args.model} on {device} ({torch.get_num_threads()} threads), {len(questions)} questions "
          f"({len(mcq)} multiple choice) from {sorted(wanted)}")
    print(f"fast      {fast_rate:9.2f} questions/s  ({timings['fast']:.1f} s)")
    print(f"official  {official_rate:9.2f} questions/s  ({timings['official']:.1f} s)")
    print(f"ratio     {fast_rate / official_rate:9.1f}x")
    print(f"peak memory {_peak_memory_mib(device):.0f} MiB; multiple-choice predictions agree on "
          f"{agree}/{len(mcq)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
