"""Evaluation throughput: our `fast` protocol against the official protocol, same model, same questions.

    python benchmarks/eval_throughput.py [--model vanilla] [--sets forget,test] [--limit N] [--device cpu]
    python benchmarks/eval_throughput.py --shape llava-1.5-7b --device cuda --limit 64
    python benchmarks/eval_throughput.py --shape llava-1.5-geometry-small --sets forget
    python benchmarks/eval_throughput.py --breakdown   # + the ratio fast's matrix multiplications alone allow

`--shape llava-1.5-7b` times a model of LLaVA-1.5-7B's exact shape (CLIP ViT-L/14 at 336 px, 576 image
tokens, a 32-layer 4096-wide Llama, 32k vocabulary) with random weights (bfloat16 on a GPU, float32 on
CPU), built in place — nothing is downloaded; it reads the study's questions through the study
tokenizer. `llava-1.5-geometry-small` keeps LLaVA-1.5's 576 image tokens at small widths, for a CPU.
Random weights rarely emit end-of-sequence, so both protocols then generate their full 50 tokens: the
speed of the worst case.

`official` runs as eval.py runs it: one question at a time, the few-shot prompt (every question of the
same task and modality about `evaluation.demo_people` people, each with its answer and, for image
questions, its face) before multiple-choice and fill-in-the-blank questions, greedy decoding of up to
50 new tokens, stopping at end-of-sequence. `fast` scores every multiple-choice question's option
letters in batched forward passes and generates the other answers in length-bucketed batches (also
up to 50 new tokens). Prints both rates (questions per second), their ratio, peak memory and how often
the two protocols' multiple-choice predictions agree. Target on the default model, CPU: ratio >= 20.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from mmunlearn.config import load_params
from mmunlearn.data.schema import Task
from mmunlearn.data.splits import load_split
from mmunlearn.evaluation.metrics import predicted_letter
from mmunlearn.evaluation.official import OFFICIAL_MAX_NEW_TOKENS
from mmunlearn.evaluation.run import (
    EvaluationSettings,
    fast_outputs,
    official_outputs,
    questions_of,
)
from mmunlearn.models.loading import merge_adapter
from mmunlearn.models.study import load_study_model
from mmunlearn.tracking import peak_memory


# Sizes of llava-hf/llava-1.5-7b-hf (its config.json), for timing without its weights.
SHAPES = {
    "llava-1.5-7b": {
        "vision": {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
                   "num_attention_heads": 16, "image_size": 336, "patch_size": 14, "projection_dim": 768},
        "text": {"hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
                 "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 32064,
                 "max_position_embeddings": 4096},
        "vision_feature_layer": -2,
    },
    # LLaVA-1.5's image geometry (576 image tokens per face, so the face is most of each prompt) at
    # widths a CPU runs in minutes: where sharing a face's prefix shows without a GPU.
    "llava-1.5-geometry-small": {
        "vision": {"hidden_size": 256, "intermediate_size": 1024, "num_hidden_layers": 4,
                   "num_attention_heads": 4, "image_size": 336, "patch_size": 14, "projection_dim": 256},
        "text": {"hidden_size": 512, "intermediate_size": 1536, "num_hidden_layers": 4,
                 "num_attention_heads": 8, "num_key_value_heads": 8, "vocab_size": 32064,
                 "max_position_embeddings": 4096},
        "vision_feature_layer": -2,
    },
    # LLaVA's layout at toy sizes: a CPU dry run of the scripts that take a shape (real_shape_study.py).
    "llava-toy": {
        "vision": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                   "num_attention_heads": 2, "image_size": 32, "patch_size": 8, "projection_dim": 64},
        "text": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 4,
                 "num_attention_heads": 4, "num_key_value_heads": 4, "vocab_size": 32064,
                 "max_position_embeddings": 4096},
        "vision_feature_layer": -2,
    },
}


def shaped_model(shape: str, study_processor, device: torch.device):
    """(model, processor): random weights in ``shape``'s sizes (float32 on CPU, else bfloat16), the
    study tokenizer, that shape's image size."""
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    sizes, tokenizer = SHAPES[shape], study_processor.tokenizer
    side, patch = sizes["vision"]["image_size"], sizes["vision"]["patch_size"]
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": side}, crop_size={"height": side, "width": side}),
        tokenizer=tokenizer, patch_size=patch, vision_feature_select_strategy="default",
        num_additional_image_tokens=1, chat_template=study_processor.chat_template)
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(**sizes["vision"]),
        text_config=LlamaConfig(**sizes["text"], bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                pad_token_id=tokenizer.pad_token_id),
        image_token_index=tokenizer.convert_tokens_to_ids(study_processor.image_token),
        vision_feature_select_strategy="default", vision_feature_layer=sizes["vision_feature_layer"],
        image_seq_length=(side // patch) ** 2)
    torch.manual_seed(0)
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32 if device.type == "cpu" else torch.bfloat16)
    try:
        with device:
            model = LlavaForConditionalGeneration(config)
    finally:
        torch.set_default_dtype(default_dtype)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model.eval(), processor


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--model", default="vanilla", help="a model of the study (default: vanilla)")
    parser.add_argument("--sets", default="forget,test", help="comma-separated evaluated sets")
    parser.add_argument("--limit", type=int, default=0, help="at most this many questions (0: all)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--shape", help="time a random-weight model of this shape instead")
    parser.add_argument("--breakdown", action="store_true",
                        help="also profile one more `fast` run: its matrix multiplications' share and the ratio they cap")
    args = parser.parse_args(argv)

    params = load_params(args.params)
    split = load_split(params.paths.splits)
    wanted = set(args.sets.split(","))
    questions = [q for q in questions_of(split) if q.set_name in wanted]
    questions = questions[:args.limit] if args.limit else questions
    device = torch.device(args.device)
    loaded = load_study_model(params, args.model)
    if args.shape:
        model, processor = shaped_model(args.shape, loaded.processor, device)
        del loaded
    else:
        model, processor = merge_adapter(loaded.model).to(device), loaded.processor  # as the evaluate stage does
    settings = EvaluationSettings(params.evaluation.batch_size, OFFICIAL_MAX_NEW_TOKENS,
                                  demo_seed=params.evaluation.demo_seed, demo_people=params.evaluation.demo_people)
    fast_outputs(model, processor, questions[:8], settings)  # warm-up (allocator, kernels), not timed

    runs = {"fast": lambda: fast_outputs(model, processor, questions, settings),
            "official": lambda: official_outputs(model, processor, questions, split, settings)}
    timings, outputs = {}, {}
    for name, run in runs.items():
        outputs[name], timings[name] = timed(run, device)
    mcq = [i for i, q in enumerate(questions) if q.item.task is Task.MCQ]
    agree = sum(predicted_letter(outputs["fast"][i]) == outputs["official"][i] for i in mcq)
    fast_rate, official_rate = len(questions) / timings["fast"], len(questions) / timings["official"]
    print(f"model {args.shape or args.model} on {device} ({torch.get_num_threads()} threads), {len(questions)} questions "
          f"({len(mcq)} multiple choice) from {sorted(wanted)}")
    print(f"fast      {fast_rate:9.2f} questions/s  ({timings['fast']:.1f} s)")
    print(f"official  {official_rate:9.2f} questions/s  ({timings['official']:.1f} s)")
    print(f"ratio     {fast_rate / official_rate:9.1f}x")
    peaks = peak_memory()
    print("peak memory " + ", ".join(f"{name.removeprefix('host.peak_')} {mib:.0f} MiB"
                                     for name, mib in peaks.items()))
    print(f"multiple-choice predictions agree on {agree}/{len(mcq)}")
    if args.breakdown:
        matmul, total = matmul_seconds(runs["fast"], device)
        print(f"fast's matrix multiplications alone take {matmul:.2f} s of a profiled {total:.2f} s: even with "
              f"everything else free, fast would run at most {len(questions) / matmul / official_rate:.0f}x official")
    return 0


def timed(run, device: torch.device):
    """(``run()``'s result, its wall seconds), the device's queued work included."""
    def drain():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    drain()
    start = time.perf_counter()
    result = run()
    drain()
    return result, time.perf_counter() - start


MATMUL_OPS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm"}


def matmul_seconds(run, device: torch.device) -> tuple[float, float]:
    """(seconds spent in matrix multiplications, wall seconds) of one profiled ``run()``: the part of the
    work no scheduling can remove, short of doing fewer or cheaper multiplications."""
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])) as profiled:
        _, wall = timed(run, device)
    own_time = (lambda e: e.self_device_time_total) if cuda else (lambda e: e.self_cpu_time_total)
    return sum(own_time(e) for e in profiled.key_averages() if e.key in MATMUL_OPS) / 1e6, wall


if __name__ == "__main__":
    sys.exit(main())
