"""params.yaml sections that are built from others."""

from __future__ import annotations

from mmunlearn.config import load_params


def test_retain_recipe_is_finetune_with_its_changes(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("finetune:\n  epochs: 3\n  mcq_drills: 5\n  lora: {r: 8, alpha: 8}\n"
                    "finetune_retain:\n  mcq_drills: 0\n  lora: {r: 4}\n")
    params = load_params(path)
    retain = params.retain_finetune()
    assert (retain.epochs, retain.mcq_drills, retain.lora.r, retain.lora.alpha) == (3, 0, 4, 8)
    assert (params.finetune.mcq_drills, params.finetune.lora.r) == (5, 8)  # the vanilla's recipe is untouched


def test_no_retain_changes_means_the_same_recipe(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("finetune:\n  epochs: 3\n")
    params = load_params(path)
    assert params.retain_finetune() == params.finetune
