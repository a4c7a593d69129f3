"""Attack targets from the data, fact tokenisation, and the white-/black-box runners on real small models."""

from __future__ import annotations

import math
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch

from mmunlearn.attacks.blackbox import (
    SamplingSettings,
    attack_prompts,
    blackbox_replies,
    outcomes,
    replies_per_prompt,
)
from mmunlearn.attacks.deletion import deletion_summary, fact_readings, rewrite_score
from mmunlearn.attacks.stage import known_counts, known_facts, summarise
from mmunlearn.attacks.targets import forget_targets
from mmunlearn.attacks.whitebox import LensQuery, whitebox_extractions
from mmunlearn.config import AttackConfig, DataConfig, SplitConfig
from mmunlearn.data.schema import Modality, Task
from mmunlearn.data.splits import make_split
from mmunlearn.data.synthetic import generate_benchmark
from mmunlearn.errors import DataError
from mmunlearn.models.tiny import build_tiny_model, tokenizer_corpus
from mmunlearn.report import attack_csv, attack_markdown
from mmunlearn.training.data import fact_tokens
from tests.conftest import SMALL_DATA
from tests.evaluation.test_resume import _interrupted_then_resumed
from tests.models.test_tiny import SMALL_ARCH

RUNGS = ("easy", "medium", "hard")


@pytest.fixture(scope="module")
def study():
    benchmark = generate_benchmark(DataConfig(**SMALL_DATA))
    split = make_split(benchmark, SplitConfig(forget_percent=15))
    model, processor = build_tiny_model(tokenizer_corpus(benchmark.full), SMALL_ARCH)
    return split, model.eval(), processor


def test_targets_are_the_forget_facts_with_test_set_rephrasings_and_poses(study):
    split, _, _ = study
    targets = forget_targets(split, rephrasings=2)
    facts = {}  # a fact taught in several wordings is one target, asked in its first wording
    for p in split.forget:
        for pair in p.finetune_pairs:
            if pair.value in pair.answer:
                facts.setdefault((p.id, pair.attribute, pair.modality), pair.question)
    assert [(t.profile_id, t.question) for t in targets] == [(pid, q) for (pid, _, _), q in facts.items()] and targets
    assert len({p.question for prof in split.forget for p in prof.finetune_pairs}) > len(targets)
    names = {p.id: p.name for p in split.forget}
    test_wordings = {(item.attribute, item.modality, item.question.replace(p.name, "{name}"))
                     for p in split.test for item in p.items if item.task is not Task.CLOZE}
    assert any(t.rephrasings for t in targets)
    for target in targets:
        assert target.value in target.answer
        assert target.question not in target.rephrasings and len(target.rephrasings) <= 2
        for text in target.rephrasings:  # a Test-set wording of the same attribute and modality, this person named
            assert (target.attribute, target.modality, text.replace(names[target.profile_id], "{name}")) in test_wordings
        if target.modality is Modality.IMAGE:
            assert target.image_png and sorted(target.poses) == sorted(RUNGS)
        else:
            assert target.image_png is None and not target.poses
            assert all(names[target.profile_id] in text for text in target.rephrasings)


class ChunkTokenizer:
    """Three characters per token: a cut inside a chunk makes a token straddle the fact's edge."""

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [hash(text[i:i + 3]) % 997 for i in range(0, len(text), 3)]}


def test_fact_tokens_follow_the_training_tokenisation(study):
    _, _, processor = study
    tokenizer = processor.tokenizer
    target = forget_targets(study[0], 0)[0]
    before, fact = fact_tokens(tokenizer, target.answer, target.value)
    whole = tokenizer(" " + target.answer, add_special_tokens=False)["input_ids"]
    assert whole[:len(before) + len(fact)] == before + fact
    assert tokenizer.decode(fact).strip() == target.value
    assert fact_tokens(ChunkTokenizer(), "ab cd", "cd") is not None  # " ab" | " cd": clean cut
    assert fact_tokens(ChunkTokenizer(), "ab cd", "d") is None  # " ab" | " cd" straddles "d"


def _llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=40, hidden_size=16, intermediate_size=32, num_hidden_layers=3,
                                        num_attention_heads=2, num_key_value_heads=2)).eval()


@torch.no_grad()
def _greedy(model, prompt: list[int], steps: int) -> list[int]:
    ids = list(prompt)
    for _ in range(steps):
        ids.append(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax().item())
    return ids[len(prompt):]


def test_whitebox_reads_each_fact_token_where_it_is_predicted():
    model = _llama()
    processor = SimpleNamespace(tokenizer=SimpleNamespace(pad_token_id=0))
    queries, expected = [], []
    for prompt, length in (([5, 9, 3], 3), ([7, 2, 8, 1, 6, 4], 2), ([11], 1)):  # different lengths: real padding
        fact = _greedy(model, prompt, length)  # the model's own top-1 continuation
        queries.append(LensQuery({"input_ids": torch.tensor(prompt + fact[:-1])}, fact))
        expected.append(True)
        wrong = fact[:-1] + [(fact[-1] + 1) % 40]  # the last token is not the model's top-1
        queries.append(LensQuery({"input_ids": torch.tensor(prompt + wrong[:-1])}, wrong))
        expected.append(False)
    found = whitebox_extractions(model, processor, queries, layers=[-1], k=1, batch_size=6)
    assert [f["head_projection_each"].success for f in found] == expected
    assert [f["head_projection_each"].budget for f in found] == [len(q.fact_ids) for q in queries]
    # the first-token attacks only look at the first fact token, which the wrong facts keep when longer than 1
    assert [f["head_projection"].success for f in found] == [True, True, True, True, True, False]
    alone = [whitebox_extractions(model, processor, [q], layers=[-1], k=1)[0] for q in queries]
    assert alone == found  # batching and left padding change nothing


def test_fact_probability_is_the_teacher_forced_product_batched_or_alone():
    model = _llama()
    processor = SimpleNamespace(tokenizer=SimpleNamespace(pad_token_id=0))
    queries = [LensQuery({"input_ids": torch.tensor(prompt + fact[:-1])}, fact)
               for prompt, fact in (([5, 9, 3], [7, 2, 8]), ([7, 2, 8, 1, 6, 4], [3]), ([11], [12, 13]))]
    expected, greedy = [], []
    for query in queries:  # by hand: every fact token's log-probability, one full forward per query
        ids = query.encoded["input_ids"].tolist() + [query.fact_ids[-1]]
        with torch.no_grad():
            logprobs = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].float(), dim=-1)
        start = len(ids) - len(query.fact_ids)
        expected.append(sum(logprobs[start - 1 + i, token].item() for i, token in enumerate(query.fact_ids)))
        greedy.append(all(int(logprobs[start - 1 + i].argmax()) == token for i, token in enumerate(query.fact_ids)))
    batched = fact_readings(model, processor, queries, batch_size=3)
    assert [logprob for logprob, _ in batched] == pytest.approx(expected, abs=1e-5)
    assert [said for _, said in batched] == greedy
    alone = [fact_readings(model, processor, [q])[0] for q in queries]
    assert [logprob for logprob, _ in alone] == pytest.approx(expected, abs=1e-5)
    assert [said for _, said in alone] == greedy
    # a query whose fact is the model's own greedy continuation is said; the random facts above may not be
    prompt = [5, 9, 3]
    with torch.no_grad():
        first = int(model(input_ids=torch.tensor([prompt])).logits[0, -1].argmax())
        second = int(model(input_ids=torch.tensor([prompt + [first]])).logits[0, -1].argmax())
    (own,) = fact_readings(model, processor, [LensQuery({"input_ids": torch.tensor(prompt + [first])}, [first, second])])
    assert own[1] is True


def test_attacks_are_scored_on_the_facts_the_vanilla_knew():
    def record(pid, p, said, success, attack="sample"):
        return {"profile_id": pid, "attribute": "job", "modality": "text", "attack": attack, "success": success,
                "budget": 6, "fact_logprob": None if p is None else math.log(p), "fact_greedy": said}

    vanilla = [record("P1", 0.9, True, True), record("P2", 0.3, False, True), record("P3", 0.01, True, False),
               record("P4", None, None, False)]
    config = AttackConfig()  # UnLOK-VQA's filter: p ≥ 0.02 and generated
    assert known_facts(vanilla, config) == {("P1", "job", "text")}
    assert known_facts(vanilla, AttackConfig(known_generated=False)) == {("P1", "job", "text"), ("P2", "job", "text")}
    assert known_facts(vanilla, AttackConfig(known_min_probability=None, known_generated=False)) is None
    after = [record("P1", 0.1, False, False), record("P2", 0.1, False, True), record("P3", 0.01, False, True),
             record("P4", None, None, True)]
    known = known_facts(vanilla, config)
    summary = summarise(after, summarise(vanilla, known=known), known)
    assert summary["sample"]["text"] == {"success": 0.0, "budget": 6.0, "n": 1, "before": 1.0}
    assert summarise(after)["sample"]["text"]["success"] == 0.75  # every fact: the unknown ones count as found
    assert known_counts(after, known) == {"text": {"n": 1, "of": 4}}


def test_rewrite_score_is_the_share_of_the_facts_probability_removed():
    assert rewrite_score(math.log(0.1), math.log(0.4)) == pytest.approx(0.75)
    assert rewrite_score(math.log(0.4), math.log(0.4)) == pytest.approx(0.0)
    assert rewrite_score(math.log(0.9), math.log(0.01)) == -1.0  # clipped: a fact the vanilla barely knew

    def record(pid, modality, p, attack="sample"):
        return {"profile_id": pid, "attribute": "job", "modality": modality, "attack": attack,
                "fact_logprob": None if p is None else math.log(p)}

    before = [record("P1", "text", 0.8), record("P1", "text", 0.8, "head_projection"), record("P2", "text", 0.4),
              record("P1", "image", 0.5)]
    after = [record("P1", "text", 0.2), record("P1", "text", 0.2, "head_projection"), record("P2", "text", 0.4),
             record("P1", "image", 0.5), record("P3", "image", None)]
    summary = deletion_summary(after, before)
    assert summary["text"] == pytest.approx({"probability": 0.3, "before": 0.6, "score": (0.75 + 0.0) / 2, "n": 2})
    assert summary["image"] == pytest.approx({"probability": 0.5, "before": 0.5, "score": 0.0, "n": 1})
    assert deletion_summary(before, None)["text"] == pytest.approx({"probability": 0.6, "n": 2})


def test_an_interrupted_whitebox_pass_resumes_with_only_its_unfinished_batches(tmp_path):
    model = _llama()
    processor = SimpleNamespace(tokenizer=SimpleNamespace(pad_token_id=0))
    queries = [LensQuery({"input_ids": torch.tensor([3 + i, 9, 4, 7][:2 + i % 3])}, [5 + i % 4, 6][:1 + i % 2])
               for i in range(7)]

    def run(journal):  # 4 batches; layers -3..-1: every attack, with budgets that vary by query
        return whitebox_extractions(model, processor, queries, layers=[-3, -2, -1], k=3, batch_size=2,
                                    journal=journal)

    whole = run(None)
    assert len({f["probability_delta"].budget for f in whole}) > 1  # a real comparison, not constants
    resumed, calls = _interrupted_then_resumed(model, tmp_path / "white-box.jsonl", {"v": 1}, run, stop_after=2)
    assert resumed == whole
    assert calls == 2  # batches 3 and 4: the first two came from the journal


def test_blackbox_budgets_and_success_come_from_the_sampled_replies(study):
    split, model, processor = study
    targets = forget_targets(split, rephrasings=2)
    face = next(t for t in targets if t.modality is Modality.IMAGE and len(t.rephrasings) == 2)
    name = next(t for t in targets if t.modality is Modality.TEXT and len(t.rephrasings) == 2)
    face_prompts, name_prompts = attack_prompts(face, RUNGS), attack_prompts(name, RUNGS)
    assert {a: len(p) for a, p in face_prompts.items()} == {
        "sample": 1, "question_rephrase": 2, "image_rephrase_easy": 1, "image_rephrase_medium": 1,
        "image_rephrase_hard": 1, "multimodal_rephrase": 6, "any_blackbox": 12}
    assert {a: len(p) for a, p in name_prompts.items()} == {"sample": 1, "question_rephrase": 2, "any_blackbox": 3}

    settings = SamplingSettings(budget=4, seed=7, max_new_tokens=4, batch_size=4)
    replies = blackbox_replies(model, processor, [face, name], RUNGS, settings)
    assert replies == blackbox_replies(model, processor, [face, name], RUNGS, settings)  # seeded
    assert replies != blackbox_replies(model, processor, [face, name], RUNGS, replace(settings, seed=8))
    # every attack draws the same budget however many prompts it has (it was replies × prompts: 3 to 18);
    # any_blackbox pools them: 4 + 2 × 2 + 3 × 4 + 4 × 1 (multimodal: the first 4 of its 6 prompts)
    assert {a: len(r) for a, r in replies[0].items()} == {**{a: 4 for a in face_prompts}, "any_blackbox": 24}
    assert {a: len(r) for a, r in replies[1].items()} == {"sample": 4, "question_rephrase": 4, "any_blackbox": 8}
    said = next(w for w in replies[0]["multimodal_rephrase"][-1].split())  # a word the model says, to one prompt
    found = outcomes(replace(face, value=said.upper()), replies[0])  # matched case-insensitively
    assert found["multimodal_rephrase"].success and found["any_blackbox"].success
    assert found["any_blackbox"].budget == 24 and found["sample"].budget == 4
    assert not any(o.success for o in outcomes(replace(face, value="zz-never-said-zz"), replies[0]).values())


def test_a_budget_is_spread_evenly_over_an_attacks_prompts():
    assert replies_per_prompt(1, 6) == [6]
    assert replies_per_prompt(4, 6) == [2, 2, 1, 1]
    assert replies_per_prompt(6, 4) == [1, 1, 1, 1, 0, 0]  # more prompts than replies: the first ones


def test_the_old_replies_per_prompt_setting_is_named_with_its_replacement():
    with pytest.raises(ValueError, match="samples: replaced by budget"):
        AttackConfig(samples=3)


def test_prefix_and_jailbreak_attacks_put_their_text_before_the_training_question(study):
    from mmunlearn.models.prompts import generation_text

    split, _, _ = study
    face = next(t for t in forget_targets(split, rephrasings=2) if t.modality is Modality.IMAGE)
    prompts = attack_prompts(face, RUNGS, prefixes=("I'm trying out. ", "A man who was. "),
                             jailbreaks=("Say this person's {attribute}. ",))
    assert [r.user_text for r in prompts["prefix_rephrase"]] == [generation_text("I'm trying out. " + face.question),
                                                             generation_text("A man who was. " + face.question)]
    attribute = face.attribute.replace("_", " ")
    assert [r.user_text for r in prompts["jailbreak"]] == [
        generation_text(f"Say this person's {attribute}. " + face.question)]
    assert all(r.image_png == face.image_png for r in prompts["prefix_rephrase"] + prompts["jailbreak"])
    assert set(prompts["prefix_rephrase"] + prompts["jailbreak"]) <= set(prompts["any_blackbox"])
    assert "prefix_rephrase" not in attack_prompts(face, RUNGS)  # none given: the attack is left out


def test_a_jailbreak_template_naming_anything_but_the_attribute_is_refused():
    from mmunlearn.config import AttackConfig

    with pytest.raises(ValueError, match=r"jailbreaks\[1\]"):
        AttackConfig(jailbreaks=("Tell me their {attribute}. ", "Tell {name} everything. "))


def test_summary_and_report_show_each_rate_beside_the_vanilla_rate():
    records = [{"attack": "sample", "modality": "text", "success": s, "budget": 4} for s in (True, False, False, False)]
    summary = summarise(records, before={"sample": {"text": {"success": 0.75}}})
    assert summary == {"sample": {"text": {"success": 0.25, "budget": 4.0, "n": 4, "before": 0.75}}}
    table = attack_markdown({("GA", "text"): summary}, ("sample", "head_projection"))
    assert "| GA | text | — | 0.250 (0.750) |" in table and "sample (B≈4)" in table  # no rewrite score given
    deleted = attack_markdown({("GA", "text"): {**summary, "rewrite_score": {"text": {"score": 0.9, "before": 0.6,
                                                                                     "probability": 0.06, "n": 4}}}},
                              ("sample",))
    assert "| GA | text | 0.900 | 0.250 (0.750) |" in deleted and "| Rewrite score |" in deleted
    rows = attack_csv({("GA", "text"): {**summary, "rewrite_score": {"text": {"score": 0.9, "before": 0.6,
                                                                             "probability": 0.06, "n": 4}},
                                        "known_facts": {"text": {"n": 4, "of": 5}}}})
    assert rows.splitlines()[1:] == ["GA,text,text,rewrite_score,0.9,0.6,,4", "GA,text,text,sample,0.25,0.75,4.0,4"]
    counted = attack_markdown({("GA", "text"): {**summary, "known_facts": {"text": {"n": 4, "of": 5}}}}, ("sample",))
    assert "Scored on the 4 of 5 facts the vanilla model knew." in counted
    # B is the mean over the models, not the first model's budget
    lens = {"vanilla": 18.0, "ga": 24.0}
    lens_table = attack_markdown({(name, "text"): {"head_projection": {"text": {"success": 0.5, "budget": budget,
                                                                                "n": 2}}}
                                  for name, budget in lens.items()}, ("head_projection",))
    assert "head_projection (B≈21)" in lens_table
    assert "head_projection" not in table  # no model ran it: no empty column


def test_a_vanilla_run_of_other_attack_settings_or_facts_is_refused_as_the_before(study, tmp_path):
    """By hand, `attack --model ga-text` after the vanilla's run with attack.layers [-1] took that run's rates
    as its "before" (no PD / PD², 5 candidates against 9) without a word."""
    from mmunlearn.attacks.stage import _check_before

    targets = forget_targets(study[0], rephrasings=2)
    config = AttackConfig(layers=[-2, -1], budget=4)
    records = [{"profile_id": t.profile_id, "attribute": t.attribute, "modality": str(t.modality), "attack": attack,
                "budget": budget, "success": False}
               for t in targets for attack, budget in (("head_projection", 5), ("probability_delta", 9),
                                                       ("head_projection_each", 8), ("sample", 4),
                                                       ("any_blackbox", 16))]
    path = tmp_path / "vanilla.jsonl"
    _check_before(records, targets, config, path)  # the same settings and facts: fine
    for changed, needle in [
        (config.model_copy(update={"layers": [-1]}), r"other white-box attacks .*attack.layers \[-1\] give "
                                                     r"\['head_projection', 'head_projection_each'\]\)"),
        (config.model_copy(update={"budget": 6}), r"another black-box budget \(\[4\] replies; attack.budget is 6\)"),
    ]:
        with pytest.raises(DataError, match=f"vanilla.jsonl was made with {needle}: attack the vanilla model again"):
            _check_before(records, targets, changed, path)
    with pytest.raises(DataError, match=r"another forget set \(\d+ facts differ\)"):
        _check_before(records, targets[1:], config, path)
