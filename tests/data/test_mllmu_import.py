"""The MLLMU-Bench importer on a small release written in the official folder and column layout.

The release is built here from a generated benchmark with the official columns only (no name, kind,
biography, attribute or value; ft_Data without IDs; Test-set poses named ``{ID}_poseX_gen1.png``), so
what the importer reads is what the released parquet files hold, not what our writer writes.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mmunlearn.config import DataConfig, SplitConfig, load_params
from mmunlearn.data.mllmu import import_mllmu
from mmunlearn.data.schema import OFFICIAL_TYPE, Modality, Task, load_benchmark
from mmunlearn.data.splits import make_split
from mmunlearn.data.synthetic import generate_benchmark
from mmunlearn.errors import ConfigError, DataError
from tests.conftest import SMALL_DATA, run_cli, write_params

FORGET_10 = ["P0003", "P0011"]


def _official_row(profile, with_id: bool = True) -> dict:
    classification = {"Image_Textual_Questions": [], "Pure_Text_Questions": []}
    open_tasks = {"Generation_Task": [], "Mask_Task": []}
    for item in profile.items:
        if item.task is Task.MCQ:
            key = "Image_Textual_Questions" if item.modality is Modality.IMAGE else "Pure_Text_Questions"
            classification[key].append({"Question": item.question, "Options": item.options, "Correct_Answer": item.correct})
        else:
            column = "Generation_Task" if item.task is Task.GENERATION else "Mask_Task"
            open_tasks[column].append({"Type": OFFICIAL_TYPE[item.modality], "Question": item.question,
                                       "Ground_Truth": item.ground_truth})
    row = {"image": {"bytes": profile.image, "path": f"{profile.id}.png"},
           "Classification_Task": classification, **open_tasks}
    return {"ID": profile.id, **row} if with_id else row


def _write(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


@pytest.fixture(scope="module")
def generated():
    return generate_benchmark(DataConfig(**SMALL_DATA))


@pytest.fixture
def release(generated, tmp_path) -> Path:
    root = tmp_path / "MLLMU-Bench"
    _write(root / "Full_Set/train-00000.parquet", [_official_row(p) for p in generated.full])
    _write(root / "ft_Data/train-00000.parquet", [  # finetune.py's pairs: face shown, no ID column
        {"image": {"bytes": p.image, "path": None},
         "metadata": json.dumps([{"Question": q.question, "Answer": q.answer}
                                 for q in p.finetune_pairs if q.modality is Modality.IMAGE])}
        for p in generated.full])
    test_rows = [{**_official_row(p), "images": [{"bytes": pose.png, "path": f"{p.id}_pose{n}_gen1.png"}
                                                 for n, pose in enumerate(p.poses, start=1)]} for p in generated.test]
    _write(root / "Test_Set/part-0.parquet", test_rows[:7])  # a folder of several files
    _write(root / "Test_Set/part-1.parquet", test_rows[7:])
    _write(root / "Retain_Set/train-00000.parquet", [_official_row(p, with_id=False) for p in generated.celebrity])
    _write(root / "forget_10/train-00000.parquet", [_official_row(p) for p in generated.full if p.id in FORGET_10])
    return root


def _content(item):
    return (item.task, item.modality, item.question, item.ground_truth, item.options, item.correct)


def test_release_folders_become_the_benchmark_layout(generated, release, tmp_path):
    imported = import_mllmu(release)
    assert [p.id for p in imported.full] == [p.id for p in generated.full]
    for mine, theirs in zip(imported.full, generated.full):
        assert mine.kind == "fictitious" and mine.name == mine.id and mine.image == theirs.image
        assert [_content(i) for i in mine.items] == [_content(i) for i in theirs.items]
        # joined by the face's bytes: each profile gets its own pairs, nobody else's
        assert [(q.question, q.answer, q.modality) for q in mine.finetune_pairs] == [
            (q.question, q.answer, q.modality) for q in theirs.finetune_pairs if q.modality is Modality.IMAGE]
        assert all(q.value == "" for q in mine.finetune_pairs)  # the release marks no fact
    assert [row.id for row in imported.test] == [row.id for row in generated.test]
    first, source = imported.test[0], generated.test[0]
    assert [(pose.difficulty, pose.png) for pose in first.poses] == [
        (f"pose{n}", pose.png) for n, pose in enumerate(source.poses, start=1)]
    assert [p.id for p in imported.celebrity] == ["celebrity-0000", "celebrity-0001", "celebrity-0002", "celebrity-0003"]
    assert [_content(i) for i in imported.celebrity[2].items] == [_content(i) for i in generated.celebrity[2].items]
    assert imported.manifest["test_pose_difficulties"] == ["pose1", "pose2", "pose3"]
    assert imported.manifest["forget_ids"] == {"10": FORGET_10}


def test_the_split_takes_the_release_forget_set_and_the_import_validates(release, tmp_path, project, capsys, caplog):
    out = tmp_path / "mllmu"
    code, stdout, err = run_cli(["data", "import-mllmu", str(release), "--out", str(out)], capsys)
    assert code == 0, err
    assert "20 profiles" in stdout and "pose1" in stdout
    imported = load_benchmark(out)
    split = make_split(imported, SplitConfig(forget_percent=10, test_image_difficulty="pose2"))
    assert [p.id for p in split.forget] == FORGET_10 and [p.id for p in split.test] == FORGET_10
    assert split.manifest["forget_set"] == "the release's forget_10"
    # the release copy has no forget_15: a seeded draw, and a word that it is not the release's
    with caplog.at_level(logging.WARNING, logger="mmunlearn.data.splits"):
        drawn = make_split(imported, SplitConfig(forget_percent=15, test_image_difficulty="pose1"))
    assert "forget_set" not in drawn.manifest and len(drawn.forget) == 3
    assert "forget sets for 10% only; drawing a seeded forget set instead" in caplog.text
    caplog.clear()
    # a pose the rows do not have: they are shown the training face, and the split says so
    with caplog.at_level(logging.WARNING, logger="mmunlearn.data.splits"):
        unposed = make_split(imported, SplitConfig(forget_percent=10))
    assert unposed.manifest["test_rows_shown_the_training_face"] == FORGET_10
    assert "'medium': no such re-posed face in 2 Test-set rows" in caplog.text
    assert "test_rows_shown_the_training_face" not in split.manifest

    write_params(project, paths={"benchmark": str(out)}, split={"forget_percent": 10, "test_image_difficulty": "pose2"},
                 data={**SMALL_DATA, "test_pose_difficulties": ["pose1", "pose2", "pose3"]})
    code, _, err = run_cli(["validate"], capsys)
    assert code == 0, err
    assert run_cli(["split"], capsys)[0] == 0
    assert json.loads((project / "data/splits/split.json").read_text())["forget_ids"] == FORGET_10
    # every release pair shows the face: unlearning by name has nothing to act on, and says so before any
    # model is loaded (it was a sampler's "num_samples=0" traceback inside the training run)
    code, _, err = run_cli(["unlearn", "--method", "ga", "--modality", "text"], capsys)
    assert code != 0 and "no forget-set pair to unlearn with methods.ga in the text modality" in err
    assert not (project / "models").exists()


def test_a_release_that_does_not_join_up_is_named_and_nothing_is_written(release, tmp_path, project, capsys):
    _write(release / "ft_Data/train-00001.parquet", [{"image": {"bytes": b"not a face", "path": None},
                                                      "metadata": "[]"}])
    with pytest.raises(DataError, match=r"ft_Data/train-00001.parquet row 0: joins no Full_Set profile"):
        import_mllmu(release)
    code, _, err = run_cli(["data", "import-mllmu", str(release), "--out", str(tmp_path / "out")], capsys)
    assert code != 0 and "joins no Full_Set profile" in err and not (tmp_path / "out").exists()

    (release / "ft_Data/train-00001.parquet").unlink()
    rows = pq.read_table(release / "Full_Set/train-00000.parquet").to_pylist()
    _write(release / "Full_Set/train-00001.parquet", [r for r in rows if r["ID"] == "P0003"])  # again, in another file
    with pytest.raises(DataError, match=r"Full_Set: duplicate IDs \['P0003'\]"):
        import_mllmu(release)
    (release / "Full_Set/train-00001.parquet").unlink()
    _write(release / "forget_5/train-00000.parquet", [{"ID": "P9999"}])
    with pytest.raises(DataError, match=r"forget_5: IDs not in Full_Set: \['P9999'\]"):
        import_mllmu(release)
    for part in (release / "Full_Set").iterdir():
        part.unlink()
    with pytest.raises(DataError, match=r"Full_Set: no parquet files"):
        import_mllmu(release)


def test_pose_names_are_checked_and_the_generator_draws_only_its_ladder(project):
    write_params(project, data={**SMALL_DATA, "test_pose_difficulties": ["pose1", "pose2"]},
                 split={"test_image_difficulty": "pose2"})
    params = load_params(project / "params.yaml")
    assert params.split.test_image_difficulty == "pose2"
    with pytest.raises(ConfigError, match="data.test_pose_difficulties"):
        generate_benchmark(params.data)
    write_params(project, data={**SMALL_DATA, "test_pose_difficulties": ["sideways"]})
    with pytest.raises(ConfigError, match=r"data.test_pose_difficulties"):
        load_params(project / "params.yaml")
