"""Where a model comes from: a folder, or a hub id read from the Hugging Face cache with no network."""

from __future__ import annotations

import pytest
import torch
from huggingface_hub import constants

from mmunlearn.config import DataConfig
from mmunlearn.data.synthetic import generate_benchmark
from mmunlearn.errors import ConfigError, DataError
from mmunlearn.models.loading import (
    DEVICE_ENV,
    available_locally,
    check_model_folder,
    compute_device,
    load_model,
)
from mmunlearn.models.tiny import build_tiny_model, tokenizer_corpus
from tests.conftest import SMALL_DATA, run_cli, write_params
from tests.models.test_tiny import SMALL_ARCH


def _cache_as_the_hub_leaves_it(cache, repo_id: str, model, processor, files=None, commit="0" * 40, ref="main"):
    """``cache/models--org--name/snapshots/<commit>/`` with ``refs/<ref>`` naming the commit."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    model.save_pretrained(snapshot)
    processor.save_pretrained(snapshot)
    for name in files or ():
        (snapshot / name).unlink()
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / ref).write_text(commit)


@pytest.fixture(scope="module")
def tiny():
    return build_tiny_model(tokenizer_corpus(generate_benchmark(DataConfig(**SMALL_DATA)).full), SMALL_ARCH)


def test_a_cached_hub_id_loads_offline_as_the_folder_does(tiny, tmp_path, monkeypatch):
    model, processor = tiny
    _cache_as_the_hub_leaves_it(tmp_path / "hub", "some-org/tiny-llava", model, processor)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert available_locally("some-org/tiny-llava")
    loaded = load_model("some-org/tiny-llava")
    ids = torch.tensor([[processor.tokenizer.bos_token_id, 5, 6, 7]])
    with torch.no_grad():
        assert torch.equal(loaded.model(input_ids=ids).logits, model.eval()(input_ids=ids).logits)


def test_a_cached_hub_id_without_its_weights_is_not_taken_as_available(tiny, tmp_path, monkeypatch):
    model, processor = tiny
    _cache_as_the_hub_leaves_it(tmp_path / "hub", "some-org/half", model, processor, files=["model.safetensors"])
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError, match="not in the Hugging Face cache"):
        available_locally("some-org/half")


def _logits(model):
    ids = torch.tensor([[1, 5, 6, 7]])
    with torch.no_grad():
        return model.eval()(input_ids=ids).logits


@pytest.fixture
def two_snapshots(tiny, tmp_path, monkeypatch):
    """A cached hub id with two commits, ``main`` at the first; the second's weights differ."""
    import copy

    model, processor = tiny
    cache = tmp_path / "hub"
    _cache_as_the_hub_leaves_it(cache, "some-org/tiny-llava", model, processor, commit="a" * 40)
    newer = copy.deepcopy(model)
    with torch.no_grad():
        newer.lm_head.weight.add_(0.5)
    _cache_as_the_hub_leaves_it(cache, "some-org/tiny-llava", newer, processor, commit="b" * 40, ref="v2")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache / "models--some-org--tiny-llava", model, newer


def test_the_base_stage_pins_the_hub_commit_that_every_later_stage_loads(project, two_snapshots):
    """A newer snapshot of the same id, downloaded mid-study, used to change the model under later stages."""
    import json

    from mmunlearn.config import load_params
    from mmunlearn.models.study import load_study_model, model_fingerprint

    repo, first, newer = two_snapshots
    write_params(project, data=SMALL_DATA, model={"name": "some-org/tiny-llava"})
    assert run_cli(["base"])[0] == 0
    assert json.loads((project / "models/base/source.json").read_text()) == {
        "model": "some-org/tiny-llava", "revision": "a" * 40}
    params = load_params(project / "params.yaml")
    before = model_fingerprint(params, None)
    (repo / "refs" / "main").write_text("b" * 40)  # the hub's main moved on and was downloaded
    assert torch.equal(_logits(load_study_model(params).model), _logits(first))
    assert torch.equal(_logits(load_model("some-org/tiny-llava").model), _logits(newer))
    assert model_fingerprint(params, None) == before
    assert run_cli(["base"])[0] == 0  # running base again (its params changed, say) takes the new main
    assert model_fingerprint(params, None) != before
    assert torch.equal(_logits(load_study_model(params).model), _logits(newer))


def test_model_revision_picks_a_branch_tag_or_commit(project, two_snapshots):
    import json

    write_params(project, data=SMALL_DATA, model={"name": "some-org/tiny-llava", "revision": "v2"})
    assert run_cli(["base"])[0] == 0
    assert json.loads((project / "models/base/source.json").read_text())["revision"] == "b" * 40


@pytest.mark.parametrize(("model", "needles"), [
    ({"name": "some-org/tiny-llava", "revision": "v3"}, ("model.name", "model.revision 'v3'", "--revision v3")),
    ({"name": "./weights", "revision": "v2"}, ("model.revision", "'v2'", "is a folder")),
])
def test_a_revision_that_cannot_be_had_is_named_at_the_base_stage(project, two_snapshots, tiny, capsys,
                                                                   model, needles):
    tiny[0].save_pretrained(project / "weights")
    tiny[1].save_pretrained(project / "weights")
    capsys.readouterr()
    write_params(project, data=SMALL_DATA, model=model)
    code, _, err = run_cli(["base"], capsys)
    assert code == 2 and err.count("\n") == 1, err
    assert all(needle in err for needle in needles), err
    assert not (project / "models").exists()


def test_the_compute_device_is_the_processs_gpu_when_torch_sees_one_else_the_cpu(monkeypatch):
    monkeypatch.delenv(DEVICE_ENV, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert compute_device() == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("LOCAL_RANK", "1")  # the second process of a torchrun launch: its own GPU
    assert compute_device() == torch.device("cuda", 1)


def test_the_device_variable_overrides_the_rule_and_bad_values_name_it(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setenv(DEVICE_ENV, "cpu")
    assert compute_device() == torch.device("cpu")
    monkeypatch.setenv(DEVICE_ENV, "CUDA")
    assert compute_device() == torch.device("cuda", 0)
    monkeypatch.setenv("LOCAL_RANK", "1")
    with pytest.raises(ConfigError, match=f"{DEVICE_ENV}=cuda: this process would use GPU 1, and torch sees 1"):
        compute_device()
    for wrong in ("cuda:1", "gpu", "meta"):
        monkeypatch.setenv(DEVICE_ENV, wrong)
        with pytest.raises(ConfigError, match=f"{DEVICE_ENV}={wrong!r}: expected cpu or cuda"):
            compute_device()


def test_training_follows_the_same_device_rule(monkeypatch, tmp_path):
    from mmunlearn.config import TrainConfig
    from mmunlearn.training.arguments import training_arguments

    monkeypatch.setenv(DEVICE_ENV, "cpu")
    assert training_arguments(TrainConfig(), tmp_path).use_cpu


@pytest.mark.parametrize(("damage", "error"), [
    (lambda folder: (folder / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes()[:4096]),
     "SafetensorError"),  # cut short: an interrupted copy
    (lambda folder: (folder / "config.json").write_text('{"model_type": '), "JSONDecodeError"),
    (lambda folder: (folder / "model.safetensors").unlink(), "OSError"),
    (lambda folder: (folder / "config.json").unlink(), "ValueError"),  # was a traceback ("Unrecognized model")
])
def test_a_damaged_model_folder_is_named_in_one_error(tiny, tmp_path, damage, error):
    model, processor = tiny
    folder = tmp_path / "base"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    assert load_model(folder).model is not None  # whole, it loads
    damage(folder)
    with pytest.raises(DataError, match=f"^{folder}: its files cannot be loaded \\({error}: .*dvc repro"):
        load_model(folder)


@pytest.mark.parametrize(("damage", "needle"), [
    # cut short: an interrupted copy
    (lambda weights: weights.write_bytes(weights.read_bytes()[:100]), r"\(SafetensorError"),
    # missing: peft took the folder for a hub id and raised HFValidationError, a traceback
    (lambda weights: weights.unlink(), r".*dvc repro"),
])
def test_a_damaged_adapter_is_named_not_its_base(tiny, tmp_path, damage, needle):
    from mmunlearn.config import LoraSettings
    from mmunlearn.models.loading import add_lora, save_adapter

    model, processor = tiny
    base, adapter = tmp_path / "base", tmp_path / "vanilla"
    model.save_pretrained(base)
    processor.save_pretrained(base)
    save_adapter(add_lora(load_model(base).model, LoraSettings(r=2, alpha=2)), adapter)
    damage(adapter / "adapter_model.safetensors")
    with pytest.raises(DataError, match=f"^{adapter}: its files cannot be loaded {needle}"):
        load_model(base, adapter)


def test_a_model_folder_is_checked_when_named_and_found_under_a_tilde(tiny, tmp_path, monkeypatch):
    """A folder written ~/... was 'does not exist'; a folder of .bin weights or needing its own code passed
    the base stage and failed, with a traceback or a fix that cannot help, in the first stage to load it."""
    import json

    model, processor = tiny
    monkeypatch.setenv("HOME", str(tmp_path))
    folder = tmp_path / "my-llava"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    assert available_locally("~/my-llava")
    check_model_folder("~/my-llava")
    assert load_model("~/my-llava").model is not None

    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "my_llava",
                                                    "auto_map": {"AutoConfig": "configuration_my.MyConfig"}}))
    with pytest.raises(ConfigError, match=r"^~/my-llava: loading it runs code that comes with it, and "
                                          r"model.trust_remote_code is false"):
        check_model_folder("~/my-llava")
    (folder / "config.json").write_text(json.dumps(config))

    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    with pytest.raises(ConfigError, match=r"holds no safetensors weights \(pytorch_model.bin there\): weights load "
                                          "from safetensors only"):
        check_model_folder(folder)
    (folder / "config.json").unlink()
    with pytest.raises(ConfigError, match="has no config.json"):
        check_model_folder(folder)


@pytest.mark.parametrize(("settings", "needle"), [
    ({"target_modules": ("q_proj", "query_key_value")}, r"finetune.lora.target_modules: \['query_key_value'\]"),
    ({"target_modules": r".*\.attn\.nope"}, r"finetune.lora.target_modules: \['.*\\\\.attn\\\\.nope'\]"),
    ({"modules_to_save": ("lm_head", "score_head")}, r"methods.ga.modules_to_save: \['score_head'\]"),
])
def test_lora_names_that_match_no_module_are_named(tiny, settings, needle):
    """A target was a peft traceback; a module to save that is not there was silently not trained."""
    import copy

    from mmunlearn.config import LoraSettings
    from mmunlearn.models.loading import add_lora

    fields = ("finetune.lora.target_modules", "methods.ga.modules_to_save")
    with pytest.raises(ConfigError, match=needle) as refused:
        add_lora(copy.deepcopy(tiny[0]), LoraSettings(r=2, alpha=2, **settings), fields)
    assert "q_proj" in str(refused.value)  # the names the model has, to pick from
    model = add_lora(copy.deepcopy(tiny[0]), LoraSettings(r=2, alpha=2, target_modules=("q_proj",),
                                                          modules_to_save=("lm_head",)))
    assert any("lora_A" in name for name, _ in model.named_parameters())
