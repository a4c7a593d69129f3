"""The one training loop: a Hugging Face Trainer whose loss comes from a registered objective.

Fine-tuning passes plain batches and the NLL objective; unlearning passes {"forget", "retain"} batches
and a composed method loss. The Trainer brings DeepSpeed (TrainingArguments(deepspeed=...)), gradient
accumulation, checkpoints (an interrupted stage resumes from the last one) and logging.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset, Sampler
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import sort_checkpoints

from mmunlearn.training.data import CONVERSATION, collate

log = logging.getLogger(__name__)
LossFn = Callable[[torch.nn.Module, dict], torch.Tensor]


class EncodedDataset(Dataset):
    def __init__(self, examples: list[dict]):
        self.examples = examples
        self.is_conversation = [bool(e.get(CONVERSATION)) for e in examples]
        self.lengths = [len(e["input_ids"]) for e in examples]

    @property
    def has_conversations(self) -> bool:
        return any(self.is_conversation)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict:
        return self.examples[index]


class ForgetRetainDataset(Dataset):
    """Each forget example (with its alternative answer, if any) and a retain example.

    Indexed by (forget index, retain index), the pairs ``ForgetRetainSampler`` draws; a plain forget
    index takes the partner at its own position of the first seeded walk through the retain set.
    """

    def __init__(self, forget: list[dict], retain: list[dict], seed: int = 0,
                 alternative: list[dict] | None = None):
        if alternative is not None and len(alternative) != len(forget):
            raise ValueError("one alternative answer per forget example is needed")
        self.forget, self.retain, self.seed, self.alternative = forget, retain, seed, alternative

    def __len__(self) -> int:
        return len(self.forget)

    def __getitem__(self, index: int | tuple[int, int]) -> dict:
        forget_index, retain_index = index if isinstance(index, tuple) else (index, None)
        item = {"forget": self.forget[forget_index]}
        if self.retain:
            if retain_index is None:
                retain_index = retain_walk(len(self.retain), self.seed, forget_index)
            item["retain"] = self.retain[retain_index]
        if self.alternative is not None:
            item["forget_alternative"] = self.alternative[forget_index]
        return item


def retain_walk(retain_count: int, seed: int, step: int) -> int:
    """The retain example at ``step`` of an endless walk through the retain set: a new seeded order each
    pass, so every retain example is seen once before any is seen again."""
    return _retain_pass(retain_count, seed, step // retain_count)[step % retain_count]


def _retain_pass(retain_count: int, seed: int, number: int) -> list[int]:
    generator = torch.Generator().manual_seed(seed * 1_000_003 + 7_919 + number)
    return torch.randperm(retain_count, generator=generator).tolist()


class ForgetRetainSampler(Sampler[tuple[int, int]]):
    """(forget index, retain partner) pairs: the forget examples in a seeded random order each epoch, each
    with the next retain example of ``retain_walk``.

    MLLMU-Bench's GradDiff and KL descend on the whole retain set every epoch; one retain example per
    forget example, drawn once per index, kept the regulariser on the same tenth of the retain set (a
    10% forget set) for the whole run. Walking on from epoch to epoch, it sees as much of the retain
    set as its steps allow, at the same cost per step.
    """

    def __init__(self, forget_count: int, retain_count: int, seed: int):
        self.forget_count, self.retain_count, self.seed, self.epoch = forget_count, retain_count, seed, 0

    def set_epoch(self, epoch: int) -> None:  # the Trainer calls this before every epoch
        self.epoch = epoch

    def __len__(self) -> int:
        return self.forget_count

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.forget_count, generator=generator).tolist()
        start = self.epoch * self.forget_count
        walk = self._walk(start)
        for forget_index in order:
            yield forget_index, next(walk)

    def _walk(self, start: int):
        number, position = divmod(start, self.retain_count)
        while True:  # retain_walk's steps, one permutation per pass rather than one per step
            yield from _retain_pass(self.retain_count, self.seed, number)[position:]
            number, position = number + 1, 0


class GroupedBatchSampler(Sampler[int]):
    """A seeded random order of whole batches, each all single turns or all conversations and, given
    lengths, of examples of similar length.

    A conversation (a demonstration before the question) is about twice as long as a single turn, and
    one in a batch pads every row to its length: mixed in at random, one drill in ten would double the
    cost of almost every batch. With ``lengths``, each kind's random stream is cut into mega-batches of
    ``megabatch`` batches, sorted by length within, then cut into batches (HF's group_by_length); the
    batches are then shuffled, so consecutive steps do not walk one mega-batch from long to short.
    """

    def __init__(self, is_conversation: list[bool], batch_size: int, seed: int,
                 lengths: list[int] | None = None, megabatch: int = 50):
        if lengths is not None and len(lengths) != len(is_conversation):
            raise ValueError("one length per example is needed")
        self.is_conversation, self.batch_size, self.seed = is_conversation, batch_size, seed
        self.lengths, self.megabatch, self.epoch = lengths, megabatch, 0

    def set_epoch(self, epoch: int) -> None:  # the Trainer calls this before every epoch
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.is_conversation)

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(len(self.is_conversation), generator=generator).tolist()
        size, batches, leftover = self.batch_size, [], []
        for kind in (False, True):
            stream = self._length_grouped([index for index in order if self.is_conversation[index] is kind])
            whole = len(stream) - len(stream) % size
            batches += [stream[start:start + size] for start in range(0, whole, size)]
            leftover += stream[whole:]  # the partial batches go last, so every batch before is whole
        for position in torch.randperm(len(batches), generator=generator).tolist():
            yield from batches[position]
        yield from leftover

    def _length_grouped(self, stream: list[int]) -> list[int]:
        if self.lengths is None:
            return stream
        span = self.batch_size * self.megabatch
        return [index for start in range(0, len(stream), span)
                for index in sorted(stream[start:start + span], key=self.lengths.__getitem__, reverse=True)]


@dataclass(frozen=True)
class Collator:
    pad_token_id: int

    def __call__(self, examples: list[dict]) -> dict:
        if "forget" in examples[0]:  # unlearning: a batch per part
            return {part: collate([e[part] for e in examples], self.pad_token_id) for part in examples[0]}
        return collate(examples, self.pad_token_id)


class ObjectiveTrainer(Trainer):
    """Trainer whose ``compute_loss`` delegates to ``loss_fn(model, inputs)``."""

    def __init__(self, *args, loss_fn: LossFn, **kwargs):
        super().__init__(*args, **kwargs)
        self.loss_fn = loss_fn
        self._parameter_count: int | None = None

    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if isinstance(dataset, ForgetRetainDataset) and dataset.retain:
            return ForgetRetainSampler(len(dataset), len(dataset.retain), dataset.seed)
        by_length = self.args.train_sampling_strategy == "group_by_length" and isinstance(dataset, EncodedDataset)
        if not (by_length or getattr(dataset, "has_conversations", False)):
            return super()._get_train_sampler(train_dataset)
        return GroupedBatchSampler(dataset.is_conversation, self.args.train_batch_size * self.args.gradient_accumulation_steps
                                   * max(1, self.args.world_size), self.args.seed,
                                   dataset.lengths if by_length else None)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss = self.loss_fn(model, inputs)
        if self.args.world_size > 1 and not is_partitioned(model):
            loss = loss + every_parameter_in_graph(model)
        return (loss, None) if return_outputs else loss

    def floating_point_ops(self, inputs: dict) -> int:
        """HF's FLOP estimate (6 × tokens × parameters), with the parameters counted once rather than at
        every step: the count walks every module, ~2.5 ms a step on the tiny default."""
        main_input = getattr(self.model, "main_input_name", "input_ids")
        if main_input not in inputs or not hasattr(self.model, "num_parameters"):
            return 0
        if self._parameter_count is None:
            self._parameter_count = self.model.num_parameters(exclude_embeddings=True)
        return 6 * inputs[main_input].numel() * self._parameter_count


def every_parameter_in_graph(model: torch.nn.Module) -> torch.Tensor:
    """0 × the sum of every trainable parameter: gives each one a (zero) gradient, the update unchanged.

    A batch without faces never runs the vision tower, so on that rank its parameters get no gradient.
    With several processes, ZeRO then reduces gradient buckets of different sizes on different ranks
    and the collective fails (gloo: "Received data size doesn't match expected size").
    """
    return 0.0 * sum(parameter.sum() for parameter in model.parameters() if parameter.requires_grad)


def is_partitioned(model: torch.nn.Module) -> bool:
    """Whether ZeRO-3 shards the parameters. Outside its modules' forward each is an empty placeholder, so
    `every_parameter_in_graph` broke the backward pass; ZeRO-3 reduces each gradient through hooks of its
    own and, without that term, two processes train and save (tests/test_distributed.py)."""
    return any(hasattr(parameter, "ds_id") for parameter in model.parameters())


def last_complete_checkpoint(folder: str | Path) -> str | None:
    """The newest checkpoint in ``folder`` the Trainer finished writing, or None.

    The Trainer writes a checkpoint in place, its state file last, and only then deletes the older one:
    a process killed mid-save leaves a newer folder without that file, from which resuming would fail
    (or start from step 0). That folder is passed over, not deleted: every process of a multi-GPU run
    decides alike, and the finished stage removes all checkpoints anyway.
    """
    for checkpoint in reversed(sort_checkpoints(str(folder)) if Path(folder).is_dir() else []):
        if (Path(checkpoint) / TRAINER_STATE_NAME).is_file():
            return checkpoint
        log.warning("passing over %s: cut short while it was being saved", checkpoint)
    return None


def run_training(model, dataset: Dataset, collator: Collator, loss_fn: LossFn, args: TrainingArguments,
                 callbacks: list[TrainerCallback] | None = None) -> ObjectiveTrainer:
    """Train (resuming from the newest complete checkpoint in ``args.output_dir`` if there is one)."""
    trainer = ObjectiveTrainer(model=model, args=args, train_dataset=dataset, data_collator=collator,
                               loss_fn=loss_fn, callbacks=callbacks)
    last = last_complete_checkpoint(args.output_dir)
    if last:
        log.info("resuming from %s", last)
    trainer.train(resume_from_checkpoint=last)
    return trainer
