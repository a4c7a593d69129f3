"""TrainingArguments from a stage's TrainConfig: one place that maps our params onto the HF Trainer."""

from __future__ import annotations

from pathlib import Path

from transformers import TrainingArguments

from mmunlearn.config import TrainConfig
from mmunlearn.models.loading import compute_device


def training_arguments(config: TrainConfig, checkpoint_dir: Path, **overrides) -> TrainingArguments:
    settings = dict(
        output_dir=str(checkpoint_dir),
        num_train_epochs=config.epochs,
        learning_rate=config.lr,
        per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.gradient_accumulation,
        warmup_steps=config.warmup_steps,
        max_grad_norm=config.max_grad_norm,
        lr_scheduler_type=config.lr_schedule,
        adam_beta2=config.adam_beta2,
        weight_decay=0.0,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=1,
        logging_steps=config.logging_steps,
        report_to=[],  # MLflow logging goes through tracking.py
        remove_unused_columns=False,  # our collator needs every field
        seed=config.seed,
        data_seed=config.seed,
        train_sampling_strategy="group_by_length" if config.group_by_length else "random",
        dataloader_num_workers=0,
        use_cpu=compute_device().type == "cpu",  # the one device rule (models/loading.py)
        deepspeed=str(config.deepspeed) if config.deepspeed else None,
        disable_tqdm=False,
    )
    settings.update(overrides)
    return TrainingArguments(**settings)
