"""benchmarks/vanilla_letter_sweep.py: a --study run takes its batch, steps, lr and warm-up from the recipe,
so those flags beside --study are refused (they were silently overwritten), naming the --set to use."""

from __future__ import annotations

import sys

import pytest

from tests.conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
import vanilla_letter_sweep  # noqa: E402


def test_recipe_flags_beside_study_are_refused_with_the_set_to_use(capsys):
    with pytest.raises(SystemExit):
        vanilla_letter_sweep.parse_args(["run", "--study", "--batch", "8", "--steps", "100"])
    assert "instead of --batch, --steps use --set batch_size=..., --set epochs=..." in capsys.readouterr().err


def test_without_study_the_flags_keep_their_defaults_or_values():
    args = vanilla_letter_sweep.parse_args(["run", "--lr", "2e-3"])
    assert (args.lr, args.batch, args.warmup, args.steps) == (2e-3, 16, 200, 6000)
    study = vanilla_letter_sweep.parse_args(["run", "--study", "--set", "mcq_drills=8"])
    assert study.study and study.set == ["mcq_drills=8"]
