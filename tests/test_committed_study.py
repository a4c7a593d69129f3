"""The committed study (metrics/, rebuilt by `make run`) holds the first study's bars: a vanilla that
learned the profiles and the public figures, and a Gradient Ascent that forgets in both modalities."""

from __future__ import annotations

import json

import pytest

from mmunlearn.config import load_params
from tests.conftest import REPO_ROOT

PARAMS = load_params(REPO_ROOT / "params.yaml")
MODALITIES = ("image", "text")  # as evaluated: face shown / name only


def _letters(model: str) -> dict:
    """{set: {modality: multiple-choice accuracy}} of a committed evaluation."""
    scores = json.loads((REPO_ROOT / PARAMS.paths.metrics / f"{model}.json").read_text())
    return {name: {m: cell[m]["mcq_acc"] for m in MODALITIES} for name, cell in scores.items()}


def test_the_vanilla_learned_the_profiles_in_both_modalities_and_kept_the_public_figures():
    vanilla = _letters("vanilla")
    for set_name in ("forget", "retain"):
        for modality in MODALITIES:
            assert vanilla[set_name][modality] >= 0.80, (set_name, modality, vanilla[set_name])
    assert min(vanilla["celebrity"].values()) >= 0.60, vanilla["celebrity"]


@pytest.mark.parametrize("unlearned_on", PARAMS.unlearn.modalities)
def test_gradient_ascent_lowers_the_forget_letters_by_a_quarter_in_both_modalities(unlearned_on):
    before, after = _letters("vanilla")["forget"], _letters(f"ga-{unlearned_on}")["forget"]
    for modality in MODALITIES:
        assert before[modality] - after[modality] >= 0.25, (modality, before, after)
