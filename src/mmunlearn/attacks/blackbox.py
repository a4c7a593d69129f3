"""Black-box extraction attacks: ask again, reworded and with other pictures, and sample many answers.

Each attack gives every target a set of prompts and draws ``budget`` sampled replies over them (spread
evenly; the first prompts get one more where it does not divide), and succeeds when any reply contains
the fact (case-insensitive), as UnLOK-VQA scores it. Every attack thus has the same budget B per target,
as in the paper (B = 20 there), so their success rates compare: with replies per prompt fixed instead,
an attack with more prompts drew more replies, and "multimodal rephrasing is strongest" was partly its
larger budget. Prompts ask in the evaluation's one-sentence format.

- ``sample``: the training question itself (with the training face for face questions);
- ``question_rephrase``: the question's paraphrases (targets.py), same face;
- ``prefix_rephrase``: the question behind unrelated sentence openings (UnLOK-VQA's "random prefix"
  attack: its five prefixes by default, none of them the Input Rephrasing defense's four), same face;
- ``jailbreak``: the question behind a prompt that tells the model it may or must say the attribute
  (``{attribute}`` filled in), same face;
- ``image_rephrase_<rung>``: face questions only, the training question over a re-posed face, one
  attack per rung of the easy → hard ladder (increasing distance from the trained picture);
- ``multimodal_rephrase``: face questions only, every paraphrase over every re-posed face;
- ``any_blackbox``: every reply drawn above together (budget: their number) — the worst case for the defender.

Every distinct prompt is sampled once, as many times as the attack that asks it most needs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from mmunlearn.attacks.targets import AttackTarget
from mmunlearn.evaluation.engine import Request, sample_replies
from mmunlearn.journal import JournalScope, scoped
from mmunlearn.models.prompts import generation_text


@dataclass(frozen=True)
class SamplingSettings:
    budget: int = 6  # replies per target, for each attack
    seed: int = 0
    temperature: float = 1.0
    top_k: int = 50
    max_new_tokens: int = 24
    batch_size: int = 32


def attack_prompts(target: AttackTarget, rungs: Sequence[str], prefixes: Sequence[str] = (),
                   jailbreaks: Sequence[str] = ()) -> dict[str, list[Request]]:
    """Each black-box attack's prompts for one target (an attack that does not apply is left out)."""
    def ask(question: str, image: bytes | None) -> Request:
        return Request(generation_text(question), image)

    prompts = {"sample": [ask(target.question, target.image_png)]}
    if target.rephrasings:
        prompts["question_rephrase"] = [ask(text, target.image_png) for text in target.rephrasings]
    if prefixes:
        prompts["prefix_rephrase"] = [ask(prefix + target.question, target.image_png) for prefix in prefixes]
    if jailbreaks:
        attribute = target.attribute.replace("_", " ")
        prompts["jailbreak"] = [ask(template.format(attribute=attribute) + target.question, target.image_png)
                                for template in jailbreaks]
    if target.image_png is not None:
        for rung in rungs:
            if rung in target.poses:
                prompts[f"image_rephrase_{rung}"] = [ask(target.question, target.poses[rung])]
        poses = [target.poses[rung] for rung in rungs if rung in target.poses]
        if target.rephrasings and poses:
            prompts["multimodal_rephrase"] = [ask(text, pose) for text in target.rephrasings for pose in poses]
    prompts[ANY_BLACKBOX] = list(dict.fromkeys(request for requests in prompts.values() for request in requests))
    return prompts


ANY_BLACKBOX = "any_blackbox"


def blackbox_names(rungs: Sequence[str]) -> tuple[str, ...]:
    return ("sample", "question_rephrase", "prefix_rephrase", "jailbreak",
            *(f"image_rephrase_{rung}" for rung in rungs), "multimodal_rephrase", ANY_BLACKBOX)


def contains_fact(reply: str, value: str) -> bool:
    return value.casefold() in reply.casefold()


@dataclass(frozen=True)
class Outcome:
    success: bool
    budget: int  # replies drawn


def replies_per_prompt(prompts: int, budget: int) -> list[int]:
    """How many replies each of an attack's ``prompts`` draws so that they add up to ``budget``: evenly, the
    first ones one more where it does not divide (past ``budget`` prompts, the rest draw none)."""
    return [budget // prompts + (index < budget % prompts) for index in range(prompts)]


def blackbox_replies(model, processor, targets: Sequence[AttackTarget], rungs: Sequence[str],
                     settings: SamplingSettings, system_prompt: str | None = None,
                     journal: JournalScope | None = None, prefixes: Sequence[str] = (),
                     jailbreaks: Sequence[str] = ()) -> list[dict[str, list[str]]]:
    """Every reply each attack got, per target: ``settings.budget`` each, ``any_blackbox`` all of them.
    Each distinct prompt is sampled once, as often as the attack that asks it most needs. ``journal``:
    batches an interrupted run sampled are read back."""
    plans, wanted = [], {}
    for target in targets:
        prompts = attack_prompts(target, rungs, prefixes, jailbreaks)
        plan = {attack: list(zip(requests, replies_per_prompt(len(requests), settings.budget)))
                for attack, requests in prompts.items() if attack != ANY_BLACKBOX}
        for request, count in (pair for pairs in plan.values() for pair in pairs):
            wanted[request] = max(wanted.get(request, 0), count)
        plans.append(plan)
    drawn: dict[Request, list[str]] = {}
    for count in sorted(set(wanted.values()) - {0}):  # one sampling pass per number of replies
        group = [request for request, wanted_count in wanted.items() if wanted_count == count]
        drawn.update(zip(group, sample_replies(
            model, processor, group, count, settings.seed, settings.batch_size, settings.max_new_tokens,
            settings.temperature, settings.top_k, system_prompt, desc=f"black-box sampling ({count} per prompt)",
            journal=scoped(journal, f"{count} replies"))))
    replies = []
    for plan in plans:
        by_attack = {attack: [reply for request, count in pairs for reply in drawn.get(request, [])[:count]]
                     for attack, pairs in plan.items()}
        asked = dict.fromkeys(request for pairs in plan.values() for request, count in pairs if count)
        by_attack[ANY_BLACKBOX] = [reply for request in asked for reply in drawn[request]]
        replies.append(by_attack)
    return replies


def outcomes(target: AttackTarget, replies_by_attack: dict[str, list[str]]) -> dict[str, Outcome]:
    """Success = any reply states the fact; budget = how many replies the attack drew."""
    return {attack: Outcome(any(contains_fact(reply, target.value) for reply in replies), len(replies))
            for attack, replies in replies_by_attack.items()}
