"""Interrupted inference resumes: the journal keeps finished batches, and a resumed pass runs only the
rest and returns exactly what an uninterrupted pass returns."""

from __future__ import annotations

import json

import pytest
import torch

from mmunlearn.config import DataConfig
from mmunlearn.data.synthetic import generate_benchmark
from mmunlearn.evaluation.engine import Request, generate_replies, sample_replies, score_options
from mmunlearn.journal import Journal
from mmunlearn.models.prompts import generation_text
from mmunlearn.models.tiny import build_tiny_model, tokenizer_corpus
from tests.conftest import SMALL_DATA
from tests.evaluation.test_engine import _random_requests
from tests.models.test_tiny import SMALL_ARCH


class Interrupted(Exception):
    pass


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    benchmark = generate_benchmark(DataConfig(**SMALL_DATA))
    model, processor = build_tiny_model(tokenizer_corpus(benchmark.full), SMALL_ARCH)
    return model.eval(), processor, benchmark


def _forward_calls(model, stop_after: int | None = None) -> tuple[list[int], object]:
    """Count the model's top-level forward calls; raise ``Interrupted`` on call ``stop_after + 1``."""
    calls = []

    def hook(module, args, kwargs):
        calls.append(1)
        if stop_after is not None and len(calls) > stop_after:
            raise Interrupted

    return calls, model.register_forward_pre_hook(hook, with_kwargs=True)


def _interrupted_then_resumed(model, path, fingerprint, run, stop_after: int):
    """(outputs of the resumed run, forward calls it made) after a run stopped mid-way."""
    calls, handle = _forward_calls(model, stop_after)
    with pytest.raises(Interrupted):
        run(Journal(path, fingerprint).scope("pass"))
    handle.remove()
    calls, handle = _forward_calls(model)
    try:
        return run(Journal(path, fingerprint).scope("pass")), len(calls)
    finally:
        handle.remove()


def test_resumed_option_scoring_runs_only_the_unfinished_batches(tiny, tmp_path):
    model, processor, benchmark = tiny
    requests = _random_requests(benchmark, 17, seed=3)  # faces and text-only: shared-prefix and whole batches

    def run(journal):
        return score_options(model, processor, requests, batch_size=4, journal=journal)

    calls, handle = _forward_calls(model)
    whole = run(None)
    handle.remove()
    batches = len(calls)  # one forward per batch (a shared face also prefills: count what really runs)
    resumed, calls_after = _interrupted_then_resumed(model, tmp_path / "scores.jsonl", {"v": 1}, run, stop_after=3)
    assert resumed == whole  # exact: journaled floats read back bit for bit
    assert 0 < calls_after < batches


def test_resumed_greedy_and_sampled_generation_equal_an_uninterrupted_run(tiny, tmp_path):
    model, processor, benchmark = tiny
    requests = [Request(generation_text(item.question), profile.image if item.modality == "image" else None)
                for profile in benchmark.full[:3] for item in profile.items[:4]]

    def greedy(journal):
        return generate_replies(model, processor, requests, batch_size=4, max_new_tokens=3, journal=journal)

    def sampled(journal):  # each batch seeds its own draw: skipping finished batches changes no other one
        return sample_replies(model, processor, requests, samples=2, seed=5, batch_size=4, max_new_tokens=3,
                              journal=journal)

    for name, run in (("greedy", greedy), ("sampled", sampled)):
        whole = run(None)
        resumed, _ = _interrupted_then_resumed(model, tmp_path / f"{name}.jsonl", {"v": 1}, run, stop_after=5)
        assert resumed == whole, name


def test_a_journal_of_other_inputs_is_discarded_and_a_torn_line_ignored(tmp_path):
    path = tmp_path / "journal.jsonl"
    journal = Journal(path, {"model": "a"})
    journal.scope("pass").put(0, [[0, "x"]])
    journal.scope("pass").put(1, [[1, "y"]])
    with path.open("a") as file:
        file.write('{"key": "pass/2", "val')  # the process was killed mid-line
    again = Journal(path, {"model": "a"}).scope("pass")
    assert again.get(0) == [[0, "x"]] and again.get(1) == [[1, "y"]] and again.get(2) is None
    assert all(json.loads(line) for line in path.read_text().splitlines())  # the torn line is gone
    other = Journal(path, {"model": "b"}).scope("pass")
    assert other.get(0) is None
    other.journal.finish()
    assert not path.exists()
