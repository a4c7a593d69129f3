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


def test_methods_unlearn_the_pairs_in_the_formats_the_vanilla_learned_them(tmp_path):
    """Unlearning acted on bare QA pairs while the vanilla had learned them under the generation
    instruction: a prompt neither the vanilla nor NPO's reference had been trained on."""
    path = tmp_path / "params.yaml"
    path.write_text("finetune:\n  formats: [generation, cloze, mcq]\n"
                    "methods:\n  ga: {forget: ga}\n  npo: {forget: npo, formats: [qa, cloze]}\n")
    params = load_params(path)
    assert params.methods["ga"].formats == ("generation",)
    assert params.methods["npo"].formats == ("qa", "cloze")  # said: kept
    path.write_text("finetune:\n  formats: [mcq]\nmethods:\n  ga: {forget: ga}\n")
    assert load_params(path).methods["ga"].formats == ("qa",)


def test_a_method_may_train_its_own_modules_in_full(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("finetune:\n  lora: {r: 8, modules_to_save: [lm_head]}\n"
                    "methods:\n  ga: {forget: ga}\n  hp: {forget: head_projection_defense, modules_to_save: []}\n")
    params = load_params(path)
    assert params.methods["ga"].lora(params.finetune.lora) == params.finetune.lora
    own = params.methods["hp"].lora(params.finetune.lora)
    assert (own.r, own.modules_to_save) == (8, ())
