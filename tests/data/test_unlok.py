"""The UnLOK-VQA importer on a small fixture in the released record format, with images in its folder layout."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from mmunlearn.attacks.blackbox import attack_prompts
from mmunlearn.attacks.targets import forget_targets
from mmunlearn.config import SplitConfig
from mmunlearn.data.schema import Modality, Task, load_benchmark, save_benchmark
from mmunlearn.data.splits import make_split
from mmunlearn.data.unlok import import_unlok
from mmunlearn.errors import DataError
from tests.conftest import run_cli

RECORDS = Path(__file__).parent / "fixtures" / "unlok_records.json"


def _jpeg(colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 12), colour).save(buffer, format="JPEG")
    return buffer.getvalue()


@pytest.fixture
def images(tmp_path) -> Path:
    """COCO images for every record (one in val2017), paraphrase images: all rungs for id 1, easy for id 12."""
    root = tmp_path / "images"
    files = {
        "coco2017/train2017/000000480208.jpg": (200, 0, 0),
        "coco2017/val2017/000000000012.jpg": (0, 200, 0),
        "coco2017/train2017/000000000099.jpg": (0, 0, 200),
        "parap_images/okvqa/1.jpg": (210, 10, 10),
        "parap_images_medium/okvqa/1.jpg": (220, 20, 20),
        "paraphrase_images_hard/okvqa_yolo_dino_bert/processed_images/1.jpg": (230, 30, 30),
        "parap_images/okvqa/12.jpg": (10, 10, 210),
    }
    for relative, colour in files.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(_jpeg(colour))
    return root


def test_records_become_profiles_test_rows_and_neighbourhood_knowledge(images, tmp_path):
    benchmark = import_unlok(RECORDS, images)
    assert [p.id for p in benchmark.full] == ["okvqa-1", "okvqa-7", "okvqa-12"]
    first = benchmark.full[0]
    assert first.image == (images / "coco2017/train2017/000000480208.jpg").read_bytes()  # original bytes
    assert benchmark.full[1].image == (images / "coco2017/val2017/000000000012.jpg").read_bytes()
    (pair,) = first.finetune_pairs
    assert (pair.question, pair.answer, pair.value, pair.modality) == (
        "Can you guess the place where the man is playing?", "Mountains", "Mountains", Modality.IMAGE)
    mcq = first.items_of(Task.MCQ, Modality.IMAGE)[0]
    assert mcq.options[mcq.correct] == "Mountains" and set(mcq.options.values()) == {"Mountains", "Beach", "Desert", "Forest"}
    assert not benchmark.full[1].items_of(Task.MCQ, Modality.IMAGE)  # one alternate answer: no four options
    test = {row.id: row for row in benchmark.test}
    assert [i.question for i in test["okvqa-1"].items] == ["Where is the man playing? Can you guess?",
                                                           "What place is the man playing in?"]
    assert [pose.difficulty for pose in test["okvqa-1"].poses] == ["easy", "medium", "hard"]
    assert [pose.difficulty for pose in test["okvqa-12"].poses] == ["easy"] and not test["okvqa-7"].poses
    neighbours = {p.id: p for p in benchmark.celebrity}
    assert set(neighbours) == {"okvqa-1-loc", "okvqa-12-loc"}  # record 7 has no neighbourhood questions
    assert [(i.question, i.ground_truth) for i in neighbours["okvqa-1-loc"].items] == [
        ("Who is wearing a yellow jacket?", "Person"), ("Is it snowing?", "Yes")]
    assert benchmark.manifest["pose_rungs"] == ["easy", "medium", "hard"]

    save_benchmark(tmp_path / "bench", benchmark)  # round trip through the parquet layout
    assert load_benchmark(tmp_path / "bench").full == benchmark.full


def test_attacks_run_on_imported_records_with_their_own_paraphrases(images):
    split = make_split(import_unlok(RECORDS, images), SplitConfig(forget_percent=15))  # one record forgotten
    (target,) = forget_targets(split, rephrasings=4)
    record = next(r for r in json.loads(RECORDS.read_text()) if f"okvqa-{r['id']}" == target.profile_id)
    assert target.value == record["pred"] and set(target.rephrasings) == set(record["rephrase"])
    prompts = attack_prompts(target, ("easy", "medium", "hard"))
    assert "sample" in prompts and "question_rephrase" in prompts


def test_cli_writes_the_benchmark_and_bad_records_name_file_and_record(images, tmp_path, project, capsys):
    code, out, _ = run_cli(["data", "import-unlok", str(RECORDS), "--images", str(images), "--out", str(tmp_path / "b")], capsys)
    assert code == 0 and "3 records" in out
    assert len(load_benchmark(tmp_path / "b").full) == 3

    broken = tmp_path / "broken.json"
    records = json.loads(RECORDS.read_text())
    del records[1]["pred"]
    broken.write_text(json.dumps(records))
    with pytest.raises(DataError, match=r"broken.json record 1 .*missing \['pred'\]"):
        import_unlok(broken, images)
    shutil.rmtree(images / "coco2017/val2017")
    with pytest.raises(DataError, match=r"record 1 .*image_id 12: COCO image not found"):
        import_unlok(RECORDS, images)
    code, _, err = run_cli(["data", "import-unlok", str(RECORDS), "--images", str(images), "--out", str(tmp_path / "c")], capsys)
    assert code != 0 and "COCO image not found" in err and not (tmp_path / "c").exists()  # nothing half-written


def test_an_import_passes_validation_and_splits(images, tmp_path, project, capsys):
    """Every imported profile had the name "", which the profiles suite rejects: `validate`, the stage
    before `split` in dvc.yaml, failed on every import."""
    from tests.conftest import write_params

    out = tmp_path / "unlok"
    # the Test set asks with a re-posed image (a critical expectation): every record has one here
    shutil.copyfile(images / "parap_images/okvqa/12.jpg", images / "parap_images/okvqa/7.jpg")
    assert run_cli(["data", "import-unlok", str(RECORDS), "--images", str(images), "--out", str(out)], capsys)[0] == 0
    write_params(project, paths={"benchmark": str(out)}, split={"forget_percent": 15})
    code, _, err = run_cli(["validate"], capsys)
    assert code == 0, err
    assert run_cli(["split"], capsys)[0] == 0


@pytest.mark.parametrize(("change", "needle"), [
    (lambda records: records[1].update(image_id="abc"), r"record 1 \(id 7\): image_id must be a COCO image number"),
    (lambda records: records.clear(), "no records"),
    (lambda records: records.append(dict(records[0])), r"records.json: duplicate IDs \['okvqa-1'\]"),
])
def test_malformed_records_are_named_not_tracebacks(images, tmp_path, change, needle):
    records = json.loads(RECORDS.read_text())
    change(records)
    path = tmp_path / "records.json"
    path.write_text(json.dumps(records))
    with pytest.raises(DataError, match=needle):
        import_unlok(path, images)


def test_records_without_a_rephrased_question_are_named(images, tmp_path, caplog):
    """Their Test rows asked nothing and validation passed them without a word."""
    import logging

    records = json.loads(RECORDS.read_text())
    records[1]["rephrase"] = []
    path = tmp_path / "records.json"
    path.write_text(json.dumps(records))
    with caplog.at_level(logging.WARNING, logger="mmunlearn.data.unlok"):
        imported = import_unlok(path, images)
    assert [row.id for row in imported.test if not row.items] == ["okvqa-7"]
    assert "1 records have no rephrased question (field rephrase, e.g. ['okvqa-7'])" in caplog.text


def test_a_whole_file_object_is_named_as_the_wrong_layout(images, tmp_path):
    """{"data": [...]} pretty-printed was read as JSON lines: "not valid JSON (line 1: Expecting property name")."""
    path = tmp_path / "records.json"
    path.write_text(json.dumps({"data": json.loads(RECORDS.read_text())}, indent=2))
    with pytest.raises(DataError, match=r"records.json: one JSON object spread over lines; expected a JSON list"):
        import_unlok(path, images)


def test_json_lines_errors_name_the_files_own_line(images, tmp_path):
    """Each line is parsed alone, so every error said "line 1"."""
    lines = [json.dumps(record) for record in json.loads(RECORDS.read_text())]
    lines[2] = lines[2][:-5]
    path = tmp_path / "records.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"records.jsonl: not valid JSON \(line 3:"):
        import_unlok(path, images)
    string_ids = [{**json.loads(line), "id": f"q{n}"} for n, line in enumerate(lines[:2])]
    path.write_text("\n".join(json.dumps(r) for r in string_ids) + "\n")
    assert [p.id for p in import_unlok(path, images).full] == ["okvqa-q0", "okvqa-q1"]  # int() raised before
