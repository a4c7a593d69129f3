from __future__ import annotations

import io
import itertools
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmunlearn.config import DataConfig
from mmunlearn.data.faces import MIN_FEATURE_DISTANCE, distinct_identities
from mmunlearn.data.schema import Modality, Task, load_benchmark
from mmunlearn.data.synthetic import generate_benchmark
from tests.conftest import REPO_ROOT, SMALL_DATA, run_cli, write_params


def _tree_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_same_params_give_byte_identical_files_and_another_seed_differs(project, capsys):
    assert run_cli(["data", "synth", "--out", "a"], capsys)[0] == 0
    assert run_cli(["data", "synth", "--out", "b"], capsys)[0] == 0
    assert _tree_bytes(project / "a") == _tree_bytes(project / "b")

    write_params(project, data={**SMALL_DATA, "seed": 8})
    assert run_cli(["data", "synth", "--out", "c"], capsys)[0] == 0
    first, other = load_benchmark(project / "a"), load_benchmark(project / "c")
    assert [p.name for p in first.full] != [p.name for p in other.full]
    assert (project / "a" / "full.parquet").read_bytes() != (project / "c" / "full.parquet").read_bytes()


def test_how_the_data_is_fetched_is_not_part_of_its_bytes(project, capsys):
    # data.pull_timeout_s once went into the manifest: the data's hash moved off data.dvc's, data unchanged
    write_params(project, data={**SMALL_DATA, "pull_timeout_s": 5, "source": "pinned"})
    assert run_cli(["data", "synth", "--out", "a"], capsys)[0] == 0
    write_params(project, data={**SMALL_DATA, "pull_timeout_s": None, "source": "synthetic"})
    assert run_cli(["data", "synth", "--out", "b"], capsys)[0] == 0
    assert _tree_bytes(project / "a") == _tree_bytes(project / "b")


def test_the_committed_params_generate_the_bytes_data_dvc_pins(tmp_path):
    """What a fresh clone's `data fetch` regenerates is what data.dvc pins: else the clone's data and every
    stage after it differ from the committed study."""
    from dvc.repo import Repo

    from mmunlearn.config import load_params
    from mmunlearn.data.fetch import synthesise, tracked_data_is_current

    params = load_params(REPO_ROOT / "params.yaml")
    Repo.init(str(tmp_path), no_scm=True).close()
    shutil.copy(REPO_ROOT / params.paths.data_dvc, tmp_path / params.paths.data_dvc)
    synthesise(params, tmp_path / params.paths.benchmark)
    assert tracked_data_is_current(tmp_path, tmp_path / params.paths.data_dvc)
    assert (tmp_path / params.paths.data_dvc).read_bytes() == (REPO_ROOT / params.paths.data_dvc).read_bytes()


def test_every_profile_has_the_configured_questions_in_both_modalities():
    config = DataConfig(**SMALL_DATA)
    benchmark = generate_benchmark(config)
    expected = {Task.MCQ: 4, Task.GENERATION: 2, Task.CLOZE: 1}
    for profile in benchmark.full + benchmark.celebrity + benchmark.test:
        for task, modality in itertools.product(Task, Modality):
            assert len(profile.items_of(task, modality)) == expected[task], (profile.id, task, modality)
    assert len(benchmark.full) == 20 and len(benchmark.celebrity) == 4 and len(benchmark.test) == 20


def test_phrasing_follows_the_paper_this_person_with_image_name_without():
    benchmark = generate_benchmark(DataConfig(**SMALL_DATA))
    for profile in benchmark.full:
        for item in profile.items:
            if item.modality is Modality.IMAGE:
                assert "this person" in item.question.lower() and profile.name not in item.question
            else:
                assert profile.name in item.question and "this person" not in item.question.lower()
        # every fact is taught from the face and from the name
        taught = {(pair.modality, pair.answer.split()[-1]) for pair in profile.finetune_pairs}
        assert {m for m, _ in taught} == set(Modality)
        assert len(profile.finetune_pairs) == 2 * 3 * len(profile.biography)  # data.finetune_phrasings
        for pair in profile.finetune_pairs:
            assert pair.value == profile.biography[pair.attribute] and pair.value in pair.answer
    for celebrity in benchmark.celebrity:  # public figures are known in every wording: 4 asked, 2 taught
        assert len(celebrity.finetune_pairs) == 2 * 6 * len(celebrity.biography)


def test_fictitious_facts_are_taught_in_several_wordings_none_of_them_asked_in_evaluation():
    one = generate_benchmark(DataConfig(**SMALL_DATA, finetune_phrasings=1))
    three = generate_benchmark(DataConfig(**SMALL_DATA, finetune_phrasings=3))
    # the wordings only add fine-tuning pairs: every evaluation and Test question stays as it was
    assert [p.items for p in one.full] == [p.items for p in three.full]
    assert [p.items for p in one.test] == [p.items for p in three.test]
    assert [p.finetune_pairs for p in one.celebrity] == [p.finetune_pairs for p in three.celebrity]
    asked = {item.question for p in three.full + three.test for item in p.items}
    for profile in three.full:
        questions = [pair.question for pair in profile.finetune_pairs]
        assert len(set(questions)) == len(questions) == 3 * len(one.full[0].finetune_pairs)
        assert not set(questions) & asked
        # each fact keeps one answer sentence, whatever the wording of the question
        by_fact = {}
        for pair in profile.finetune_pairs:
            by_fact.setdefault((pair.attribute, pair.modality), set()).add(pair.answer)
        assert all(len(answers) == 1 for answers in by_fact.values())
    with pytest.raises(ValueError, match="finetune_phrasings"):
        DataConfig(**SMALL_DATA, finetune_phrasings=4)


def test_test_set_paraphrases_questions_and_reposes_images_of_the_same_people():
    benchmark = generate_benchmark(DataConfig(**SMALL_DATA))
    originals = {p.id: p for p in benchmark.full}
    paraphrased = 0
    for row in benchmark.test:
        source = originals[row.id]
        assert row.biography == source.biography
        assert [pose.difficulty for pose in row.poses] == ["easy", "medium", "hard"]
        assert all(pose.png != source.image for pose in row.poses)
        original_questions = {item.question for item in source.items}
        paraphrased += sum(item.question not in original_questions for item in row.items if item.task is not Task.CLOZE)
    assert paraphrased > 0.8 * sum(len(r.items) for r in benchmark.test) * 6 / 7


def _pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.float32).ravel() / 255


def test_identity_is_in_the_image_alone():
    benchmark = generate_benchmark(DataConfig(**{**SMALL_DATA, "num_profiles": 60}))
    portraits = np.stack([_pixels(p.image) for p in benchmark.full])
    # no two people share a portrait, and an easy re-pose is nearest to its own portrait
    assert len({p.image for p in benchmark.full}) == len(benchmark.full)
    hits = 0
    for index, row in enumerate(benchmark.test):
        easy = _pixels(row.poses[0].png)
        hits += int(np.argmin(((portraits - easy) ** 2).sum(axis=1)) == index)
    assert hits / len(benchmark.test) >= 0.95


def test_identities_differ_in_at_least_two_drawn_features():
    import random

    identities = distinct_identities(653, random.Random(0))
    features = np.array([identity.features() for identity in identities])
    distances = (features[:, None, :] != features[None, :, :]).sum(axis=2)
    np.fill_diagonal(distances, 99)
    assert distances.min() >= MIN_FEATURE_DISTANCE


def test_paper_size_generates():
    benchmark = generate_benchmark(DataConfig(num_profiles=500, num_celebrities=153, image_size=32))
    ids = [p.id for p in benchmark.full + benchmark.celebrity]
    names = [p.name for p in benchmark.full + benchmark.celebrity]
    assert len(set(ids)) == 653 and len(set(names)) == 653
    assert sum(len(p.items) for p in benchmark.full + benchmark.celebrity) == 653 * 14
