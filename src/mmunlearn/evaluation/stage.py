"""The ``evaluate@<model>`` stage: one model over every set × modality × metric, to files and MLflow."""

from __future__ import annotations

import logging
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING

from mmunlearn.atomic import write_json, write_json_lines
from mmunlearn.config import Params
from mmunlearn.journal import Journal

if TYPE_CHECKING:  # the split module imports pyarrow; this module stays light to import
    from mmunlearn.data.splits import Split

log = logging.getLogger(__name__)


def metrics_path(params: Params, model_name: str) -> Path:
    return params.paths.metrics / f"{model_name}.json"


def predictions_path(params: Params, model_name: str) -> Path:
    return params.paths.reports / "predictions" / f"{model_name}.jsonl"


def _require_study_model(params: Params, model_name: str) -> None:
    from mmunlearn.errors import ConfigError

    if model_name not in params.evaluated_models():
        raise ConfigError(f"--model {model_name!r}: not a model of this study (have: {params.evaluated_models()})")


def evaluation_split(params: Params, model_name: str) -> Split:
    """The split a stage asks ``model_name`` about, read once the name is checked and before any model work
    or journal: bad input fails first, and an interrupted run's journal is left as it was."""
    from mmunlearn.data.splits import load_split

    _require_study_model(params, model_name)
    return load_split(params.paths.splits)


def load_for_evaluation(params: Params, model_name: str):
    """(merged model, processor, evaluation settings) of a study model, as every evaluation loads it."""
    from mmunlearn.evaluation.run import EvaluationSettings
    from mmunlearn.models.loading import merge_adapter, place
    from mmunlearn.models.study import load_study_model, read_stack

    _require_study_model(params, model_name)
    loaded = load_study_model(params, model_name)
    model = place(merge_adapter(loaded.model))  # evaluation never trains: plain weights skip LoRA's extra matmuls
    stack = read_stack(params.paths.models / model_name) or {}
    settings = EvaluationSettings.of(params.evaluation, stack.get("system_prompt"))
    return model, loaded.processor, settings


def inference_journal(params: Params, stage: str, model_name: str, settings: dict) -> Journal:
    """The journal an interrupted ``stage`` on ``model_name`` resumes from (under ``paths.checkpoints``),
    valid only for the same model files, questions (the split), ``settings`` and code."""
    from mmunlearn.journal import files_fingerprint, source_fingerprint
    from mmunlearn.models.study import model_fingerprint

    return Journal(params.paths.checkpoints / stage / f"{model_name}.jsonl",
                   {"model": model_fingerprint(params, model_name), "split": files_fingerprint(params.paths.splits),
                    "settings": settings, **source_fingerprint()})


def protocols_stage(params: Params, model_name: str = "vanilla") -> dict:
    """Both protocols on one model's multiple-choice questions: agreement summary and disagreements."""
    from mmunlearn import tracking
    from mmunlearn.atomic import write_text
    from mmunlearn.evaluation.agreement import agreement_markdown, compare_protocols

    split = evaluation_split(params, model_name)
    model, processor, settings = load_for_evaluation(params, model_name)
    journal = inference_journal(params, "protocols", model_name, asdict(settings))
    with tracking.stage_run(params.tracking, "protocols", model_name,
                            {"evaluation": params.evaluation.model_dump(mode="json")}, params.paths.data_dvc):
        summary, disagreements = compare_protocols(model, processor, split, settings, journal)
        tracking.log_metrics(summary)
    write_json(agreement_metrics_path(params), summary)
    write_text(agreement_report_path(params), agreement_markdown(model_name, summary, disagreements))
    journal.finish()
    log.info("protocols: %s agree on %.1f%% of multiple-choice questions", model_name,
             100 * summary["overall"]["agreement"])
    return summary


def agreement_metrics_path(params: Params) -> Path:
    return params.paths.metrics / "protocol_agreement.json"


def agreement_report_path(params: Params) -> Path:
    return params.paths.reports / "protocol_agreement.md"


def evaluate_stage(params: Params, model_name: str) -> dict:
    from mmunlearn import tracking
    from mmunlearn.evaluation.general import general_ability, load_general_set
    from mmunlearn.evaluation.judge import build_judge
    from mmunlearn.evaluation.run import evaluate

    # bad input (an unknown model, an unreadable split, a judge without its key, a malformed general set)
    # fails before any model work, and before the journal an interrupted run left is opened
    split = evaluation_split(params, model_name)
    judge = build_judge(params.evaluation.judge)
    general = load_general_set(params.evaluation.general_set) if params.evaluation.general_set else None
    model, processor, settings = load_for_evaluation(params, model_name)
    journal = inference_journal(params, "evaluate", model_name, asdict(settings))  # before the judge: not an input
    settings = replace(settings, judge=judge)
    with tracking.stage_run(params.tracking, "evaluate", model_name,
                            {"evaluation": params.evaluation.model_dump(mode="json"),
                             "split": params.split.model_dump(mode="json"),
                             "system_prompt": settings.system_prompt or ""}, params.paths.data_dvc):
        results, records = evaluate(model, processor, split, settings, journal)
        if general:
            results["general"] = general_ability(model, processor, general, settings.batch_size,
                                                 settings.system_prompt)
        tracking.log_metrics(results)
        if judge is not None:
            usage = judge.usage.summary()
            tracking.log_metrics({"judge": usage})
            log.info("judge usage: %s", usage)
    write_json(metrics_path(params, model_name), results)
    write_json_lines(predictions_path(params, model_name), records)
    journal.finish()
    log.info("evaluate: %s → %s", model_name, metrics_path(params, model_name))
    return results
