"""The ``attack@<model>`` stage: every white-box and black-box attack on one model's forget facts.

Results per attack × modality of the fact (face or name): success rate, mean budget B and the number
of facts, with the vanilla model's success rate beside it as ``before`` — the rate before unlearning;
and under ``rewrite_score`` how much of the facts' probability unlearning removed (attacks/deletion.py).
To ``metrics/attacks/<model>.json`` (``dvc metrics show``), per-fact records to
``reports/attacks/<model>.jsonl``, and MLflow metrics ``attack.<attack>.<modality>.<success|budget|before>``.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from mmunlearn.atomic import read_json, read_json_lines, write_json, write_json_lines
from mmunlearn.attacks import KNOWN_FACTS, REWRITE_SCORE
from mmunlearn.attacks.blackbox import (
    ANY_BLACKBOX,
    SamplingSettings,
    blackbox_names,
    blackbox_replies,
    outcomes,
)
from mmunlearn.attacks.deletion import FACT_GREEDY, FACT_LOGPROB, deletion_summary, fact_key, fact_readings
from mmunlearn.attacks.targets import AttackTarget, forget_targets
from mmunlearn.attacks.whitebox import (
    LAYERS_NEEDED,
    WHITEBOX_ATTACKS,
    lens_query,
    whitebox_extractions,
)
from mmunlearn.config import AttackConfig, Params
from mmunlearn.errors import ConfigError, DataError
from mmunlearn.journal import Journal, scoped
from mmunlearn.methods.lens import resolve_layers
from mmunlearn.models.prompts import generation_text

log = logging.getLogger(__name__)
BEFORE_MODEL = "vanilla"


def attack_metrics_path(params: Params, model_name: str) -> Path:
    return params.paths.metrics / "attacks" / f"{model_name}.json"


def attack_records_path(params: Params, model_name: str) -> Path:
    return params.paths.reports / "attacks" / f"{model_name}.jsonl"


def attack_names(rungs: Sequence[str]) -> tuple[str, ...]:
    """Every attack the stage runs, white-box first: the report's column order."""
    return (*WHITEBOX_ATTACKS, *blackbox_names(rungs))


def run_attacks(model, processor, targets: Sequence[AttackTarget], config: AttackConfig, rungs: Sequence[str],
                system_prompt: str | None = None, journal: Journal | None = None) -> list[dict]:
    """One record per (fact, attack): {profile_id, attribute, modality, attack, success, budget, fact_logprob,
    fact_greedy} (the model's log p(fact) and whether greedy decoding says it, the same on every record of
    a fact; None where the fact straddles a token boundary). ``journal``: an interrupted run's finished
    batches (every pass) are read back."""
    queries = [lens_query(processor, generation_text(t.question), t.image_png, t.answer, t.value,
                          system_prompt) for t in targets]
    scorable = [i for i, query in enumerate(queries) if query is not None]
    if len(scorable) < len(targets):
        log.warning("white-box: %d of %d facts straddle a token boundary and are not scored",
                    len(targets) - len(scorable), len(targets))
    lens_found = dict(zip(scorable, whitebox_extractions(model, processor, [queries[i] for i in scorable],
                                                         config.layers, config.k, config.batch_size,
                                                         journal=scoped(journal, "white-box"))))
    readings = dict(zip(scorable, fact_readings(model, processor, [queries[i] for i in scorable], config.batch_size,
                                                scoped(journal, "fact-probability"))))
    sampling = SamplingSettings(config.budget, config.seed, config.temperature, config.top_k,
                                config.max_new_tokens, config.batch_size)
    sampled = [outcomes(target, replies) for target, replies in
               zip(targets, blackbox_replies(model, processor, targets, rungs, sampling, system_prompt,
                                            scoped(journal, "black-box"), config.prefixes[:config.rephrasings],
                                            config.jailbreaks[:config.rephrasings]))]
    records = []
    for index, target in enumerate(targets):
        for attack, outcome in [*lens_found.get(index, {}).items(), *sampled[index].items()]:
            records.append({"profile_id": target.profile_id, "attribute": target.attribute,
                            "modality": str(target.modality), "attack": attack,
                            "success": outcome.success, "budget": outcome.budget,
                            FACT_LOGPROB: readings[index][0] if index in readings else None,
                            FACT_GREEDY: readings[index][1] if index in readings else None})
    return records


def known_facts(vanilla_records: Sequence[dict], config: AttackConfig) -> set[tuple[str, str, str]] | None:
    """The facts the vanilla model knew, which the attacks are scored on (UnLOK-VQA / Patil et al. attack
    only facts the model generates with p ≥ 0.02: a fact it never knew is not "deleted"); None: every fact."""
    if config.known_min_probability is None and not config.known_generated:
        return None
    threshold = math.log(config.known_min_probability) if config.known_min_probability is not None else -math.inf
    return {fact_key(r) for r in vanilla_records
            if r.get(FACT_LOGPROB) is not None and r[FACT_LOGPROB] >= threshold
            and (r.get(FACT_GREEDY) or not config.known_generated)}


def of_known(records: Sequence[dict], known: set | None) -> list[dict]:
    """The records of ``known`` facts (all of them for None)."""
    return [r for r in records if known is None or fact_key(r) in known]


def known_counts(records: Sequence[dict], known: set | None) -> dict:
    """{modality: {n: facts scored, of: facts attacked}}."""
    facts, scored = {fact_key(r) for r in records}, {fact_key(r) for r in of_known(records, known)}
    return {modality: {"n": sum(1 for f in scored if f[2] == modality), "of": sum(1 for f in facts if f[2] == modality)}
            for modality in sorted({f[2] for f in facts})}


def summarise(records: Sequence[dict], before: dict | None = None, known: set | None = None) -> dict:
    """{attack: {modality: {success, budget, n[, before]}}} from per-fact records (those of ``known`` facts
    only, when given)."""
    cells: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for record in of_known(records, known):
        cells[(record["attack"], record["modality"])].append(record)
    summary: dict = {}
    for (attack, modality), rows in sorted(cells.items()):
        cell = {"success": sum(r["success"] for r in rows) / len(rows),
                "budget": sum(r["budget"] for r in rows) / len(rows), "n": len(rows)}
        if before is not None:
            cell["before"] = before.get(attack, {}).get(modality, {}).get("success")
        summary.setdefault(attack, {})[modality] = cell
    return summary


def _before(params: Params, model_name: str) -> tuple[dict, list[dict]] | None:
    """The vanilla model's summary and per-fact records: the rates and fact probabilities before unlearning."""
    if model_name == BEFORE_MODEL:
        return None
    found = []
    for path, read in ((attack_metrics_path(params, BEFORE_MODEL), read_json),
                       (attack_records_path(params, BEFORE_MODEL), read_json_lines)):
        if not path.is_file():
            raise DataError(f"{path}: not found — the pre-unlearning rates (run `mmunlearn attack --model "
                            f"{BEFORE_MODEL}`)")
        found.append(read(path))
    return found[0], found[1]


def _check_before(before_records: Sequence[dict], targets: Sequence[AttackTarget], config: AttackConfig,
                  path: Path) -> None:
    """The vanilla's records must come from these attack settings and this forget set. Run by hand (not by
    dvc repro), an attack after a change of attack.layers, attack.budget or the split took the vanilla's
    old run as its "before" without a word. What its records show is checked: the facts, the white-box
    attacks the layers allow, the black-box budget."""
    problems = []
    facts, theirs = {(t.profile_id, t.attribute, str(t.modality)) for t in targets}, {fact_key(r) for r in before_records}
    if facts != theirs:
        problems.append(f"another forget set ({len(facts ^ theirs)} facts differ)")
    whitebox = {attack for attack in WHITEBOX_ATTACKS if LAYERS_NEEDED.get(attack, 1) <= len(config.layers)}
    their_whitebox = {r["attack"] for r in before_records if r["attack"] in WHITEBOX_ATTACKS}
    if their_whitebox and their_whitebox != whitebox:
        problems.append(f"other white-box attacks ({sorted(their_whitebox)}; attack.layers {list(config.layers)} "
                        f"give {sorted(whitebox)})")
    budgets = {r["budget"] for r in before_records if r["attack"] not in WHITEBOX_ATTACKS and r["attack"] != ANY_BLACKBOX}
    if budgets and budgets != {config.budget}:
        problems.append(f"another black-box budget ({sorted(budgets)} replies; attack.budget is {config.budget})")
    if problems:
        raise DataError(f"{path} was made with {'; '.join(problems)}: attack the vanilla model again first "
                        f"(`mmunlearn attack --model {BEFORE_MODEL}`, or dvc repro)")


def attack_stage(params: Params, model_name: str) -> dict:
    from mmunlearn import tracking
    from mmunlearn.evaluation.stage import evaluation_split, inference_journal, load_for_evaluation

    split = evaluation_split(params, model_name)
    targets = forget_targets(split, params.attack.rephrasings)
    before = _before(params, model_name)  # a missing or mismatched prerequisite fails before any model work
    if before is not None:
        _check_before(before[1], targets, params.attack, attack_records_path(params, BEFORE_MODEL))
    model, processor, settings = load_for_evaluation(params, model_name)
    try:  # before the journal opens: a layer the model lacks failed once the attacks ran
        resolve_layers(model, params.attack.layers)
    except ValueError as exc:
        raise ConfigError(f"{params.source}: attack.layers: {exc}") from None
    journal = inference_journal(params, "attack", model_name, {"attack": params.attack.model_dump(mode="json"),
                                                                 "rungs": params.data.test_pose_difficulties,
                                                                 "system_prompt": settings.system_prompt})
    with tracking.stage_run(params.tracking, "attack", model_name,
                            {"attack": params.attack.model_dump(mode="json"),
                             "split": params.split.model_dump(mode="json"),
                             "system_prompt": settings.system_prompt or ""}, params.paths.data_dvc):
        records = run_attacks(model, processor, targets, params.attack, params.data.test_pose_difficulties,
                              settings.system_prompt, journal)
        known = known_facts(before[1] if before else records, params.attack)
        summary = summarise(records, before and before[0], known)
        summary[REWRITE_SCORE] = deletion_summary(of_known(records, known), before and before[1])
        summary[KNOWN_FACTS] = known_counts(records, known)
        tracking.log_metrics({"attack": summary})
    write_json(attack_metrics_path(params, model_name), summary)
    write_json_lines(attack_records_path(params, model_name), records)
    journal.finish()
    log.info("attack: %s → %s", model_name, attack_metrics_path(params, model_name))
    return summary
