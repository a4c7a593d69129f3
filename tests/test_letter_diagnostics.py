"""benchmarks/letter_diagnostics.py: its drill parsing and its batched "check" reading (option put first
and marked) against one option at a time."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from mmunlearn.config import DataConfig
from mmunlearn.data.schema import OPTION_LETTERS
from mmunlearn.data.synthetic import generate_benchmark
from mmunlearn.models.tiny import build_tiny_model, tokenizer_corpus
from mmunlearn.training.data import collate
from mmunlearn.training.examples import RIGHT, WRONG, build_examples, value_pools
from tests.conftest import SMALL_DATA
from tests.models.test_tiny import SMALL_ARCH

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import letter_diagnostics

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


@pytest.fixture(scope="module")
def study():
    torch.manual_seed(0)
    benchmark = generate_benchmark(DataConfig(**SMALL_DATA))
    model, processor = build_tiny_model(tokenizer_corpus(benchmark.full), SMALL_ARCH)
    drills = build_examples(benchmark.full[:3], ("mcq_check",), 1, 0, value_pools(benchmark.full))
    return model.eval(), processor, benchmark, drills


def test_split_drill_reads_back_the_question_and_the_unmarked_options(study):
    _, _, benchmark, drills = study
    pairs = {(p.question, p.value) for profile in benchmark.full[:3] for p in profile.finetune_pairs}
    assert drills
    for drill in drills:
        question, values = letter_diagnostics.split_drill(drill)
        assert len(values) == len(OPTION_LETTERS) == len(set(values))
        assert not any(v.endswith(RIGHT) or v.endswith(WRONG) for v in values)
        # the value under the drill's answer letter is the person's own fact
        assert (question, values[OPTION_LETTERS.index(drill.answer)]) in pairs


def test_mark_tokens_tell_right_from_wrong(study):
    _, processor, _, _ = study
    right_id, wrong_id = letter_diagnostics.mark_token_ids(processor.tokenizer)
    assert right_id != wrong_id


def test_batched_check_equals_one_option_at_a_time(study):
    """Each option's log-odds in the padded batch equal those of its prompt alone."""
    model, processor, _, drills = study
    right_id, wrong_id = letter_diagnostics.mark_token_ids(processor.tokenizer)
    for drill in (drills[0], next(d for d in drills if d.image_png is not None)):
        question, values = letter_diagnostics.split_drill(drill)
        right_value = values[OPTION_LETTERS.index(drill.answer)]
        odds = letter_diagnostics.first_option_log_odds(model, processor, question, values, drill.image_png,
                                                        right_value)
        # the reference: the same prompts, each alone, read at the first mark
        alone = []
        for value in values:
            order = [value] + [v for v in values if v != value]
            mark = RIGHT if value == right_value else WRONG
            options = dict(zip(OPTION_LETTERS, [value + mark] + order[1:]))
            example = letter_diagnostics.encode_example(
                processor, letter_diagnostics.TextExample(letter_diagnostics.mcq_text(question, options), "",
                                                          drill.image_png, (mark,)))
            batch = collate([example], processor.tokenizer.pad_token_id)
            labels = batch.pop("labels")[0, 1:]
            with torch.no_grad():
                logprobs = torch.log_softmax(model(**batch).logits[0, :-1].float(), dim=-1)
            position = ((labels == right_id) | (labels == wrong_id)).nonzero()[0, 0]
            alone.append((logprobs[position, right_id] - logprobs[position, wrong_id]).item())
        assert odds == pytest.approx(alone, abs=1e-4)
        assert len(set(round(o, 6) for o in odds)) > 1  # a reading that varies by option, not a constant
