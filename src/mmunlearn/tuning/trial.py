"""One trial: unlearn with a trial's hyper-parameters (in memory), then evaluate the sets the objectives read.

The same pieces as the study's stages — ``prepare_unlearning``, the one Trainer, the one evaluation
loop — minus their files: a trial writes only its adapter, into a scratch folder.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from mmunlearn.config import MethodConfig, Params
from mmunlearn.data.splits import Split
from mmunlearn.evaluation.run import EVALUATED_SETS, EvaluationSettings, evaluate


def train_candidate(params: Params, method: str, config: MethodConfig, modality: str, workdir: Path):
    """(model with the unlearning folded in, processor, adapter folder or None for an untrained method)."""
    from mmunlearn.models.loading import merge_adapter, place, save_adapter
    from mmunlearn.models.study import load_study_model
    from mmunlearn.training.arguments import training_arguments
    from mmunlearn.training.stages import prepare_unlearning
    from mmunlearn.training.trainer import Collator, run_training

    if config.forget is None:  # Prompting: the vanilla model, asked under the trial's system prompt
        vanilla = load_study_model(params, "vanilla")
        return place(merge_adapter(vanilla.model)), vanilla.processor, None
    job = prepare_unlearning(params, method, config, modality)
    args = training_arguments(config, workdir / "checkpoints", save_strategy="no", disable_tqdm=True)
    run_training(job.model, job.dataset, Collator(job.pad_token_id), job.loss, args)
    adapter = workdir / "adapter"
    save_adapter(job.model, adapter)
    return merge_adapter(job.model), job.processor, adapter


def evaluate_sets(model, processor, split: Split, sets: set[str], settings: EvaluationSettings) -> dict:
    """The evaluation loop on only ``sets`` of the split (the others left empty)."""
    unknown = sets - set(EVALUATED_SETS)
    if unknown:
        raise ValueError(f"unknown sets {sorted(unknown)}")
    if not sets:
        return {}
    only = replace(split, **{name: () for name in EVALUATED_SETS if name not in sets})
    results, _ = evaluate(model, processor, only, settings)
    return results
