"""benchmarks/train_step_time.py draws batches as the stage's Trainer does: random (padding included)
unless the stage sets ``group_by_length``. It grouped by length always, and so timed the vanilla's steps
faster than the stage ran them."""

from __future__ import annotations

import sys

import torch

from mmunlearn.training.trainer import Collator, EncodedDataset
from tests.conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
import train_step_time  # noqa: E402

PAD = 0


def _dataset(lengths: list[int]) -> EncodedDataset:
    return EncodedDataset([{"input_ids": torch.full((n,), 7), "labels": torch.full((n,), 7)} for n in lengths])


def _padding(batches: list[dict]) -> int:
    return sum(int((batch["input_ids"] == PAD).sum()) for batch in batches)


def test_random_batches_unless_the_stage_groups_by_length():
    lengths = [(index * 37) % 60 + 5 for index in range(400)]  # 5..64 tokens, interleaved
    dataset = _dataset(lengths)
    collator = Collator(PAD)
    random = list(train_step_time.batches(dataset, 16, collator, seed=0, by_length=False))
    grouped = list(train_step_time.batches(dataset, 16, collator, seed=0, by_length=True))
    assert len(random) == len(grouped) == 400 // 16
    for drawn in (random, grouped):  # every example once either way; only who shares a batch differs
        assert sorted(int(n) for batch in drawn for n in (batch["input_ids"] != PAD).sum(-1)) == sorted(lengths)
    assert _padding(grouped) * 5 < _padding(random)  # grouped batches barely pad; random ones do
    widths = [b["input_ids"].shape[1] for b in random]
    assert min(widths) > 40  # a random batch of 16 spans most lengths: its width is near the longest
