from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import Trainer, TrainerCallback, TrainingArguments

from mmunlearn.config import DataConfig
from mmunlearn.data.synthetic import generate_benchmark
from mmunlearn.methods import compose
from mmunlearn.config import MethodConfig
from mmunlearn.methods.common import answer_nll
from mmunlearn.models.tiny import build_tiny_model, tokenizer_corpus
from mmunlearn.training.data import CONVERSATION, TextExample, encode_example
from mmunlearn.training.trainer import (
    Collator,
    EncodedDataset,
    ForgetRetainDataset,
    ForgetRetainSampler,
    GroupedBatchSampler,
    every_parameter_in_graph,
    run_training,
)
from tests.conftest import SMALL_DATA
from tests.models.test_tiny import SMALL_ARCH


@pytest.fixture(scope="module")
def setup():
    benchmark = generate_benchmark(DataConfig(**SMALL_DATA))
    _, processor = build_tiny_model(tokenizer_corpus(benchmark.full), SMALL_ARCH)
    examples = [encode_example(processor, TextExample(pair.question, pair.answer,
                                                      p.image if pair.modality == "image" else None))
                for p in benchmark.full[:4] for pair in p.finetune_pairs]
    return benchmark, processor, examples


def _lora_model(benchmark):
    model, _ = build_tiny_model(tokenizer_corpus(benchmark.full), SMALL_ARCH)
    return get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", lora_dropout=0.0))


def _args(folder, **overrides) -> TrainingArguments:
    settings = dict(output_dir=str(folder), per_device_train_batch_size=8, max_steps=8, learning_rate=5e-3,
                    save_strategy="steps", save_steps=2, logging_steps=1, report_to=[], use_cpu=True,
                    remove_unused_columns=False, seed=3, data_seed=3, dataloader_num_workers=0)
    return TrainingArguments(**{**settings, **overrides})


class StopAfterSteps(TrainerCallback):
    """Ends training after ``steps`` optimizer steps, as a killed process would (checkpoints stay)."""

    def __init__(self, steps: int):
        self.steps = steps

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.steps:
            control.should_training_stop = True
        return control


class StepRecorder(TrainerCallback):
    def __init__(self):
        self.steps: list[int] = []

    def on_step_end(self, args, state, control, **kwargs):
        self.steps.append(state.global_step)


def _trainable(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def test_finetune_loss_falls(setup, tmp_path):
    benchmark, processor, examples = setup
    model, _ = build_tiny_model(tokenizer_corpus(benchmark.full), SMALL_ARCH)  # all weights train
    trainer = run_training(model, EncodedDataset(examples), Collator(processor.tokenizer.pad_token_id), answer_nll,
                           _args(tmp_path, max_steps=30, save_strategy="no", learning_rate=3e-3))
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5


def _killed_while_saving(complete, partial) -> None:
    """``partial``: the folder a process killed while saving the next checkpoint leaves — the weights
    written, the optimizer state cut short, no scheduler, RNG or trainer state yet."""
    import shutil

    shutil.copytree(complete, partial)
    for name in ("trainer_state.json", "scheduler.pt", "rng_state.pth"):
        (partial / name).unlink(missing_ok=True)
    optimizer = partial / "optimizer.pt"
    optimizer.write_bytes(optimizer.read_bytes()[:100])


def test_interrupted_finetune_resumes_to_the_same_weights(setup, tmp_path):
    """Also when the process was killed while saving a later checkpoint: that one is passed over."""
    benchmark, processor, examples = setup
    collator = Collator(processor.tokenizer.pad_token_id)
    straight = _lora_model(benchmark)
    run_training(straight, EncodedDataset(examples), collator, answer_nll, _args(tmp_path / "straight"))

    interrupted = _lora_model(benchmark)
    run_training(interrupted, EncodedDataset(examples), collator, answer_nll, _args(tmp_path / "resumed"),
                 callbacks=[StopAfterSteps(4)])
    assert (tmp_path / "resumed" / "checkpoint-4").is_dir()
    _killed_while_saving(tmp_path / "resumed" / "checkpoint-4", tmp_path / "resumed" / "checkpoint-6")
    resumed = _lora_model(benchmark)  # a fresh process would start from the same initial weights
    executed = StepRecorder()
    trainer = run_training(resumed, EncodedDataset(examples), collator, answer_nll, _args(tmp_path / "resumed"),
                           callbacks=[executed])
    assert trainer.state.global_step == 8
    assert executed.steps == [5, 6, 7, 8]  # steps 1-4 come from the checkpoint, not re-run
    expected = _trainable(straight)
    for name, value in _trainable(resumed).items():
        assert torch.allclose(value, expected[name], atol=1e-6), name


def test_gradient_ascent_raises_the_forget_loss(setup, tmp_path):
    benchmark, processor, examples = setup
    model, _ = build_tiny_model(tokenizer_corpus(benchmark.full), SMALL_ARCH)
    collator = Collator(processor.tokenizer.pad_token_id)
    probe = collator(examples[:16])
    with torch.no_grad():
        before = answer_nll(model, probe).item()
    dataset = ForgetRetainDataset(examples[:16], retain=[])
    run_training(model, dataset, collator, compose(MethodConfig(forget="ga")), _args(tmp_path, max_steps=6, save_strategy="no", learning_rate=3e-3))
    with torch.no_grad():
        assert answer_nll(model, probe).item() > before + 0.5


def test_retain_partners_walk_the_whole_retain_set_over_the_epochs():
    sampler = ForgetRetainSampler(forget_count=10, retain_count=25, seed=3)
    epochs = []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        epochs.append(list(sampler))
        assert sorted(forget for forget, _ in epochs[-1]) == list(range(10))
        assert list(sampler) == epochs[-1]  # the same epoch draws the same pairs (a resumed run)
    partners = [retain for pairs in epochs for _, retain in pairs]
    assert sorted(partners[:25]) == list(range(25))  # each retain example once before any twice
    assert len(set(partners[25:])) == 5
    assert [p for _, p in epochs[1]] != [p for _, p in epochs[0]]


def test_unlearning_steps_see_the_whole_retain_set(setup, tmp_path):
    """The retain partner was one fixed draw per forget example: over 2 epochs of 8 forget examples the
    regulariser saw at most 8 of the 16 retain examples, the same ones each epoch."""
    benchmark, processor, examples = setup
    model = _lora_model(benchmark)
    seen = []

    def recording_loss(model, inputs):
        retain = inputs["retain"]
        seen.extend(tuple(ids[mask.bool()].tolist())
                    for ids, mask in zip(retain["input_ids"], retain["attention_mask"]))
        return answer_nll(model, inputs["forget"])

    retain = examples[8:24]
    assert len({tuple(e["input_ids"]) for e in retain}) == 16
    dataset = ForgetRetainDataset(examples[:8], retain=retain, seed=3)
    run_training(model, dataset, Collator(processor.tokenizer.pad_token_id), recording_loss,
                 _args(tmp_path, max_steps=-1, num_train_epochs=2, per_device_train_batch_size=4, save_strategy="no"))
    assert len(seen) == 16 and len(set(seen)) == 16


def test_training_arguments_follow_the_stage_config(tmp_path):
    from mmunlearn.config import TrainConfig
    from mmunlearn.training.arguments import training_arguments

    config = TrainConfig(epochs=2, lr=3e-4, batch_size=4, warmup_steps=7, lr_schedule="constant_with_warmup",
                         adam_beta2=0.98, seed=5)
    args = training_arguments(config, tmp_path)
    assert (args.num_train_epochs, args.learning_rate, args.per_device_train_batch_size) == (2, 3e-4, 4)
    assert (args.warmup_steps, args.lr_scheduler_type.value, args.adam_beta2) == (7, "constant_with_warmup", 0.98)
    assert args.seed == args.data_seed == 5
    assert args.train_sampling_strategy == "random"
    assert training_arguments(TrainConfig(group_by_length=True), tmp_path).train_sampling_strategy == "group_by_length"
    with pytest.raises(ValueError, match="lr_schedule"):
        TrainConfig(lr_schedule="sometimes")


def test_flop_estimate_matches_hf_and_counts_parameters_once(setup, tmp_path, monkeypatch):
    benchmark, processor, examples = setup
    model = _lora_model(benchmark)
    trainer = run_training(model, EncodedDataset(examples), Collator(processor.tokenizer.pad_token_id), answer_nll,
                           _args(tmp_path, max_steps=1, save_strategy="no"))
    batch = Collator(processor.tokenizer.pad_token_id)(examples[:3])
    counts = []
    counted = type(model.get_base_model())  # the peft wrapper hands num_parameters to it
    count_parameters = counted.num_parameters
    monkeypatch.setattr(counted, "num_parameters",
                        lambda self, **kw: counts.append(1) or count_parameters(self, **kw))
    trainer._parameter_count = None
    ours = [trainer.floating_point_ops(batch) for _ in range(3)]
    hf = Trainer.floating_point_ops(trainer, batch)
    assert ours == [hf] * 3 and hf > 0
    assert len(counts) == 2  # one for our three estimates, one for HF's
    assert trainer.floating_point_ops({"forget": batch}) == 0  # unlearning batches: no main input, as in HF


def test_every_parameter_in_graph_gives_unused_parameters_a_zero_gradient_and_changes_no_other():
    torch.manual_seed(0)
    model = torch.nn.ModuleDict({"used": torch.nn.Linear(3, 2), "unused": torch.nn.Linear(3, 2)})
    model["unused"].bias.requires_grad_(False)
    x = torch.randn(4, 3)
    model["used"](x).square().sum().backward()
    plain = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    (model["used"](x).square().sum() + every_parameter_in_graph(model)).backward()
    assert set(plain) == {"used.weight", "used.bias"}  # a batch without faces: the tower gets no gradient
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            assert parameter.grad is None
        elif name in plain:
            assert torch.equal(parameter.grad, plain[name])
        else:
            assert torch.equal(parameter.grad, torch.zeros_like(parameter))


def test_grouped_sampler_keeps_conversations_out_of_single_turn_batches():
    is_conversation = [index % 7 == 0 for index in range(100)]  # 15 conversations, 85 single turns
    sampler = GroupedBatchSampler(is_conversation, batch_size=8, seed=1)
    order = list(sampler)
    assert sorted(order) == list(range(100)) and list(sampler) == order  # each once; seeded
    whole = [order[start:start + 8] for start in range(0, 8 * (85 // 8 + 15 // 8), 8)]
    assert all(len({is_conversation[i] for i in batch}) == 1 for batch in whole)
    assert any(is_conversation[batch[0]] for batch in whole)
    sampler.set_epoch(1)
    assert list(sampler) != order


def _padding(order: list[int], lengths: list[int], size: int) -> int:
    batches = [order[start:start + size] for start in range(0, len(order), size)]
    return sum(max(lengths[i] for i in batch) * len(batch) - sum(lengths[i] for i in batch) for batch in batches)


def test_length_grouping_cuts_padding_and_keeps_every_example_once():
    lengths = [int(length) for length in torch.randint(10, 80, (640,), generator=torch.Generator().manual_seed(3))]
    single = [False] * len(lengths)
    random_order = list(GroupedBatchSampler(single, batch_size=16, seed=0))
    sampler = GroupedBatchSampler(single, batch_size=16, seed=0, lengths=lengths, megabatch=10)
    grouped = list(sampler)
    assert sorted(grouped) == list(range(len(lengths))) and list(sampler) == grouped  # each once; seeded
    assert _padding(grouped, lengths, 16) < _padding(random_order, lengths, 16) / 4
    # the batch order is shuffled: consecutive batches do not walk a mega-batch from long to short
    maxima = [max(lengths[i] for i in grouped[start:start + 16]) for start in range(0, len(grouped), 16)]
    assert maxima != sorted(maxima, reverse=True) and any(a < b for a, b in zip(maxima, maxima[1:]))
    sampler.set_epoch(1)
    assert list(sampler) != grouped


def test_length_grouping_keeps_conversations_apart():
    lengths = [30 + index % 50 for index in range(200)]
    is_conversation = [index % 5 == 0 for index in range(200)]  # 40 conversations, 160 single turns
    order = list(GroupedBatchSampler(is_conversation, batch_size=8, seed=2, lengths=lengths))
    assert all(len({is_conversation[i] for i in order[start:start + 8]}) == 1 for start in range(0, 200, 8))
    with pytest.raises(ValueError, match="one length per example"):
        GroupedBatchSampler(is_conversation, batch_size=8, seed=2, lengths=lengths[:-1])


def test_training_groups_by_length_when_asked(setup, tmp_path):
    benchmark, processor, examples = setup
    widths: list[tuple[int, int]] = []  # (longest, shortest example) per batch

    def recording(batch):
        widths.append((max(len(e["input_ids"]) for e in batch), min(len(e["input_ids"]) for e in batch)))
        return Collator(processor.tokenizer.pad_token_id)(batch)

    steps = len(examples) // 4
    run_training(_lora_model(benchmark), EncodedDataset(examples), recording, answer_nll,
                 _args(tmp_path / "grouped", max_steps=steps, per_device_train_batch_size=4, save_strategy="no",
                       train_sampling_strategy="group_by_length"))
    grouped_spread = sum(longest - shortest for longest, shortest in widths)
    widths.clear()
    run_training(_lora_model(benchmark), EncodedDataset(examples), recording, answer_nll,
                 _args(tmp_path / "random", max_steps=steps, per_device_train_batch_size=4, save_strategy="no"))
    assert grouped_spread < sum(longest - shortest for longest, shortest in widths) / 2


def test_training_batches_conversations_apart(setup, tmp_path):
    benchmark, processor, examples = setup
    profile = benchmark.full[5]
    conversations = [encode_example(processor, TextExample(pair.question, pair.answer, None,
                                                           context=(("Who is this?", profile.image, "Nobody."),)))
                     for pair in profile.finetune_pairs]
    mixed = examples + conversations
    seen: list[set[bool]] = []

    def recording(batch):
        seen.append({bool(e.get(CONVERSATION)) for e in batch})
        return Collator(processor.tokenizer.pad_token_id)(batch)

    dataset = EncodedDataset(mixed)
    assert dataset.has_conversations and not EncodedDataset(examples).has_conversations
    run_training(_lora_model(benchmark), dataset, recording, answer_nll,
                 _args(tmp_path, max_steps=len(mixed) // 4, per_device_train_batch_size=4, save_strategy="no"))
    assert {True} in seen and all(len(kinds) == 1 for kinds in seen[:len(mixed) // 4 - 1])
