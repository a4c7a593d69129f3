"""The notes beside the report's numbers are written from params and metrics, and say what a reader
could not tell from the numbers alone (the report showed bare figures: no model, cell size or protocol)."""

from __future__ import annotations

from mmunlearn.config import load_params, overlay
from mmunlearn.report_notes import attack_notes, table_setting
from tests.conftest import REPO_ROOT

RESULTS = {("Vanilla", "—"): {"forget": {"image": {"mcq_acc": 0.8, "n_mcq_acc": 40, "n_rouge_l": 20, "n_cloze_acc": 10}},
                              "retain": {"text": {"n_mcq_acc": 360}}}}
QUALITY = {"counts": {"profiles": 100, "celebrities": 30}}
AGREEMENT = {"overall": {"agreement": 0.5, "n": 1120, "zero_shot_agreement": 1.0}}


def _params(tmp_path, **changes):
    import yaml

    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(overlay(yaml.safe_load((REPO_ROOT / "params.yaml").read_text()), changes)))
    return load_params(path)


def test_the_table_says_model_data_cell_sizes_and_protocol(tmp_path):
    setting = table_setting(_params(tmp_path), RESULTS, QUALITY, AGREEMENT)
    assert "`model.name: tiny`, the embedded default" in setting and "not the paper's LLaVA-1.5-7B" in setting
    assert "100 fictitious profiles and 30 public figures" in setting and "forget set 10% of the profiles" in setting
    assert "forget 40 multiple-choice / 20 generated / 10 fill-in-the-blank; retain 360 multiple-choice" in setting
    assert "`evaluation.protocol: fast`" in setting and "agree on 50.0% of the 1120 multiple-choice questions" in setting
    hub = table_setting(_params(tmp_path, model={"name": "llava-hf/llava-1.5-7b-hf"}, split={"forget_percent": 5}),
                        RESULTS, None, None)
    assert "`model.name: llava-hf/llava-1.5-7b-hf`." in hub and "embedded" not in hub
    assert "agree" not in hub and "fictitious profiles" not in hub  # nothing quoted that is not there


def test_attack_notes_follow_the_attack_settings_and_methods(tmp_path):
    notes = attack_notes(_params(tmp_path))
    assert "`attack.budget` = 6 replies per fact (UnLOK-VQA: 20)" in notes
    assert "Layer −1's lens is the model's own next-token distribution" in notes
    assert "Prompting changes no weight" in notes
    other = attack_notes(_params(tmp_path, attack={"layers": [-3, -2], "budget": 20},
                                 unlearn={"methods": ["ga", "npo"]}))
    assert "`attack.budget` = 20" in other and "Layer −1" not in other and "Prompting" not in other
