"""Every method of params.yaml unlearns through the real stages, in both unlearning modalities."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import yaml

from mmunlearn.config import load_params
from tests.conftest import REPO_ROOT, run_cli
from tests.test_stages import micro_study

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A micro study with base, vanilla and retain models, and every method of the repo's params.yaml."""
    def every_method(params):
        params["methods"] = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())["methods"]
        for settings in params["methods"].values():
            settings.update({"epochs": 1, "batch_size": 8})
            if "lens_layers" in settings:
                settings["lens_layers"] = [-2, -1]  # the micro model has 2 layers
        params["unlearn"] = {"methods": list(params["methods"]), "modalities": ["multimodal", "text"]}

    return micro_study(tmp_path_factory.mktemp("study"), every_method)


def _unlearn(study, monkeypatch, method: str, modality: str) -> dict:
    monkeypatch.chdir(study)
    code, _, err = run_cli(["unlearn", "--method", method, "--modality", modality])
    assert code == 0, err
    return json.loads((study / "models" / f"{method}-{modality}" / "stack.json").read_text())


@pytest.mark.parametrize("method", ["ga", "grad_diff", "kl", "npo", "simnpo", "idkpo", "rmu", "fact_erasure",
                                    "error_injection", "empty_response", "hp_defense", "max_entropy",
                                    "input_rephrasing"])
def test_each_trained_method_writes_an_adapter_on_top_of_vanilla(study, monkeypatch, method):
    from mmunlearn.models.study import load_study_model

    stack = _unlearn(study, monkeypatch, method, "text")
    assert stack == {"on_top_of": "vanilla", "adapter": True, "system_prompt": None, "method": method,
                     "modality": "text"}
    folder = study / "models" / f"{method}-text"
    assert (folder / "adapter_model.safetensors").is_file()
    # it loads as evaluation loads it, and training moved it away from the vanilla model
    params = load_params(study / "params.yaml")
    unlearned = load_study_model(params, f"{method}-text").model
    lora_b = [p for n, p in unlearned.named_parameters() if "lora_B" in n]
    assert lora_b and any(p.abs().max() > 0 for p in lora_b)


def test_npo_reference_is_selectable(study, monkeypatch, capsys):
    """reference: retain needs the retain-only model and gives other log-ratios than the vanilla reference."""
    params = yaml.safe_load((study / "params.yaml").read_text())
    params["methods"]["npo_vanilla"] = {**params["methods"]["npo"], "reference": "vanilla"}
    (study / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for method in ("npo", "npo_vanilla"):
        _unlearn(study, monkeypatch, method, "multimodal")
    from safetensors.torch import load_file

    weights = [load_file(study / "models" / f"{m}-multimodal" / "adapter_model.safetensors") for m in ("npo", "npo_vanilla")]
    assert any(not torch.equal(weights[0][k], weights[1][k]) for k in weights[0])

    shutil.move(study / "models" / "retain", study / "retain.moved")
    try:
        monkeypatch.chdir(study)
        code, _, err = run_cli(["unlearn", "--method", "npo", "--modality", "text"], capsys)
        assert code == 2 and "finetune --subset retain" in err
    finally:
        shutil.move(study / "retain.moved", study / "models" / "retain")


def test_prompting_trains_nothing_and_is_evaluated_under_its_system_prompt(study, monkeypatch, capsys):
    stack = _unlearn(study, monkeypatch, "prompting", "multimodal")
    assert stack["adapter"] is False and "personal-related information" in stack["system_prompt"]
    assert not (study / "models" / "prompting-multimodal" / "adapter_model.safetensors").exists()
    code, _, err = run_cli(["evaluate", "--model", "prompting-multimodal"], capsys)
    assert code == 0, err
    from mmunlearn.tracking import find_runs

    run = find_runs(load_params(study / "params.yaml").tracking, stage="evaluate")[0]
    assert run.data.tags["model"] == "prompting-multimodal"
    assert "personal-related information" in run.data.params["system_prompt"]


def test_unlearning_modality_decides_what_the_forget_data_shows(study, monkeypatch):
    """multimodal unlearning trains on face + "this person" questions, text unlearning on names alone."""
    from mmunlearn.data.schema import Modality
    from mmunlearn.data.splits import load_split
    from mmunlearn.training.examples import build_examples

    split = load_split(study / "data" / "splits")
    image = build_examples(split.forget, ("qa",), modality=Modality.IMAGE)
    text = build_examples(split.forget, ("qa",), modality=Modality.TEXT)
    assert image and all(e.image_png is not None and "this person" in e.user_text for e in image)
    assert text and all(e.image_png is None and "this person" not in e.user_text for e in text)
    _unlearn(study, monkeypatch, "ga", "multimodal")
    from mmunlearn.tracking import find_runs

    runs = {r.data.tags["model"]: r for r in find_runs(load_params(study / "params.yaml").tracking, stage="unlearn")}
    assert runs["ga-multimodal"].data.metrics["train.examples"] == len(image)
    assert runs["ga-text"].data.metrics["train.examples"] == len(text)


def test_unlearning_acts_on_the_pairs_as_fine_tuned_without_their_end_of_sequence(study, monkeypatch):
    """Forget answers under the vanilla's generation instruction (they were bare QA), EOS not ascended on,
    and a retain partner for each that walks the retain set (ForgetRetainSampler)."""
    from mmunlearn.models.prompts import GENERATION_INSTRUCTION
    from mmunlearn.training.data import IGNORE_INDEX
    from mmunlearn.training.stages import prepare_unlearning

    monkeypatch.chdir(study)
    params = load_params(study / "params.yaml")
    job = prepare_unlearning(params, "grad_diff", params.methods["grad_diff"], "text")
    tokenizer = job.processor.tokenizer
    for example in job.dataset.forget:
        labels = example["labels"][example["labels"] != IGNORE_INDEX]
        assert labels[-1] != tokenizer.eos_token_id and example["input_ids"][-1] == tokenizer.eos_token_id
        assert GENERATION_INSTRUCTION in tokenizer.decode(example["input_ids"])
    retain_labels = job.dataset.retain[0]["labels"]
    assert retain_labels[retain_labels != IGNORE_INDEX][-1] == tokenizer.eos_token_id  # descent keeps the ending


def test_judged_evaluation_with_a_general_set_fills_factuality_caches_it_and_never_leaks_the_key(study, monkeypatch, capsys, caplog):
    from mmunlearn.tracking import find_runs
    from tests.evaluation.openai_server import OpenAICompatibleServer

    secret = "sk-test-DO-NOT-LEAK-4242"
    monkeypatch.chdir(study)
    monkeypatch.setenv("JUDGE_TEST_KEY", secret)
    with OpenAICompatibleServer(lambda messages: "Score: 7") as server:
        params = yaml.safe_load((study / "params.yaml").read_text())
        params["evaluation"]["judge"] = {"enabled": True, "model": "local-judge", "base_url": server.base_url,
                                         "api_key_env": "JUDGE_TEST_KEY", "backoff_s": 0.0,
                                         "cache": "judge_cache.sqlite"}
        general = [{"question": f"Is {n} even?", "options": ["yes", "no"], "answer": "AB"[n % 2]} for n in range(5)]
        (study / "general.jsonl").write_text("".join(json.dumps(r) + "\n" for r in general))
        params["evaluation"]["general_set"] = "general.jsonl"
        (study / "params-judged.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        outputs = []
        for _ in range(2):
            code, out, err = run_cli(["--params", "params-judged.yaml", "evaluate", "--model", "vanilla"], capsys)
            assert code == 0, err
            outputs += [out, err]
        generated = sum(1 for line in (study / "reports" / "predictions" / "vanilla.jsonl").open()
                        if '"metric": "rouge_l"' in line)
        assert len(server.requests) == generated > 0  # the second run was answered from the cache
        assert all(a == f"Bearer {secret}" for a in server.authorizations)  # the key did reach the judge
    results = json.loads((study / "metrics" / "vanilla.json").read_text())
    for set_name in ("forget", "test", "retain", "celebrity"):
        for modality in ("image", "text"):
            cell = results[set_name][modality]
            assert cell["factuality"] == 7.0 and cell["factuality_failures"] == 0
            assert cell["n_factuality"] == cell["n_rouge_l"]
    assert results["general"]["n_mcq_acc"] == 5 and 0.0 <= results["general"]["mcq_acc"] <= 1.0
    runs = find_runs(load_params(study / "params-judged.yaml").tracking, stage="evaluate")
    first, second = runs[1], runs[0]
    assert first.data.metrics["judge.requests"] == generated and second.data.metrics["judge.requests"] == 0
    assert second.data.metrics["judge.cache_hits"] == generated
    assert second.data.params["evaluation.judge.model"] == "local-judge"
    # the key is nowhere: not in MLflow params/tags, logs, stdout/stderr or any file the study wrote
    for run in runs:
        assert secret not in json.dumps({**run.data.params, **run.data.tags})
    assert all(secret not in text for text in outputs) and secret not in caplog.text
    leaked = [path for path in study.rglob("*") if path.is_file() and secret.encode() in path.read_bytes()]
    assert leaked == []


def test_protocols_stage_writes_the_agreement_report_and_metrics(study, monkeypatch, capsys):
    from mmunlearn.config import overlay

    monkeypatch.chdir(study)
    params = overlay(yaml.safe_load((study / "params.yaml").read_text()), {"paths": {"reports": "elsewhere"}})
    (study / "elsewhere.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    code, out, err = run_cli(["-p", "elsewhere.yaml", "protocols", "--model", "vanilla"], capsys)
    assert code == 0, err
    summary = json.loads((study / "metrics" / "protocol_agreement.json").read_text())
    assert 0.0 <= summary["overall"]["agreement"] <= 1.0 and f"{summary['overall']['n']} multiple-choice" in out
    assert "## Disagreements" in (study / "elsewhere" / "protocol_agreement.md").read_text()
    assert "(elsewhere/protocol_agreement.md)" in out  # it named reports/ whatever paths.reports said


@pytest.mark.parametrize(("command", "change", "needles"), [
    (["unlearn", "--method", "hp_defense", "--modality", "text"], {"methods": {"hp_defense": {"lens_layers": [-10]}}},
     ("bad.yaml: methods.hp_defense.lens_layers", "layers [-10]")),
    (["unlearn", "--method", "rmu", "--modality", "text"], {"methods": {"rmu": {"layer": 10}}},
     ("bad.yaml: methods.rmu.layer", "10 is not one of the model's decoder layers 1..2")),
    (["attack", "--model", "vanilla"], {"attack": {"layers": [-10, -1]}},
     ("bad.yaml: attack.layers", "layers [-10]")),
])
def test_a_layer_the_model_lacks_is_named_before_any_work(study, monkeypatch, capsys, command, change, needles):
    """It was a ValueError traceback naming no field, raised after the attack's journal or the unlearning's
    checkpoint fingerprint had been written."""
    from mmunlearn.config import overlay

    params = overlay(yaml.safe_load((study / "params.yaml").read_text()), change)
    (study / "bad.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    monkeypatch.chdir(study)
    checkpoints = sorted(p.relative_to(study) for p in (study / "checkpoints").rglob("*")) \
        if (study / "checkpoints").exists() else []
    code, _, err = run_cli(["--params", "bad.yaml", *command], capsys)
    last = err.strip().splitlines()[-1]  # after the model's loading progress
    assert code == 2 and "Traceback" not in err and last.startswith("mmunlearn: error: "), err
    assert all(needle in last for needle in needles), err
    after = sorted(p.relative_to(study) for p in (study / "checkpoints").rglob("*")) \
        if (study / "checkpoints").exists() else []
    assert after == checkpoints
