"""Each kind of defect is caught by the `validate` command, which exits non-zero and names it."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import replace

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mmunlearn.data import schema
from mmunlearn.data.schema import Task, load_benchmark, save_benchmark
from tests.conftest import run_cli


@pytest.fixture
def benchmark_dir(project, capsys):
    assert run_cli(["data", "synth"], capsys)[0] == 0
    return project / "data" / "benchmark"


def _report(project) -> dict:
    return json.loads((project / "metrics" / "data_quality.json").read_text())


def _first(items, task):
    return next(i for i, item in enumerate(items) if item.task is task)


def _edit_first_profile(folder, part, edit):
    benchmark = load_benchmark(folder)
    profiles = list(getattr(benchmark, part))
    profiles[0] = edit(profiles[0])
    save_benchmark(folder, replace(benchmark, **{part: tuple(profiles)}))


def _edit_item(task, **changes):
    def edit(profile):
        items = list(profile.items)
        index = _first(items, task)
        items[index] = replace(items[index], **changes)
        return replace(profile, items=tuple(items))
    return edit


def duplicate_id(folder):
    benchmark = load_benchmark(folder)
    clone = replace(benchmark.full[1], id=benchmark.full[0].id)
    save_benchmark(folder, replace(benchmark, full=(benchmark.full[0], clone, *benchmark.full[2:])))


def five_options(folder):
    # our struct schema has four letter fields, as the official files do; a wider file is still readable
    path = folder / "full.parquet"
    rows = pq.read_table(path).to_pylist()
    rows[0]["Classification_Task"]["Image_Textual_Questions"][0]["Options"]["E"] = "one option too many"
    pq.write_table(pa.Table.from_pylist(rows), path)


def letter_not_among_options(folder):
    _edit_first_profile(folder, "full", _edit_item(Task.MCQ, correct="E"))


def empty_cloze_answer(folder):
    _edit_first_profile(folder, "full", _edit_item(Task.CLOZE, ground_truth=""))


def cloze_without_blank(folder):
    _edit_first_profile(folder, "full", _edit_item(Task.CLOZE, question="This person was born in a city."))


def undecodable_image(folder):
    _edit_first_profile(folder, "full", lambda p: replace(p, image=b"\x89PNG not really an image"))


def wrong_image_size(folder):
    from PIL import Image

    from mmunlearn.data.faces import png_bytes

    _edit_first_profile(folder, "celebrity", lambda p: replace(p, image=png_bytes(Image.new("RGB", (17, 17)))))


def grayscale_pose(folder):
    from PIL import Image

    from mmunlearn.data.faces import png_bytes

    def edit(profile):
        pose = replace(profile.poses[0], png=png_bytes(Image.new("L", (32, 32))))
        return replace(profile, poses=(pose, *profile.poses[1:]))
    _edit_first_profile(folder, "test", edit)


def unknown_test_id(folder):
    _edit_first_profile(folder, "test", lambda p: replace(p, id="P9999"))


def missing_question(folder):
    _edit_first_profile(folder, "full", lambda p: replace(p, items=tuple(
        item for i, item in enumerate(p.items) if i != _first(p.items, Task.GENERATION))))


def duplicate_option_text(folder):
    def edit(profile):
        items = list(profile.items)
        item = items[0]
        wrong = next(letter for letter in "ABCD" if letter != item.correct)
        items[0] = replace(item, options={**item.options, wrong: item.options[item.correct]})
        return replace(profile, items=tuple(items))
    _edit_first_profile(folder, "full", edit)


CORRUPTIONS = [
    (duplicate_id, "profiles", "expect_column_values_to_be_unique", "profile_id"),
    (five_options, "items", "expect_column_values_to_be_between", "option_count"),
    (letter_not_among_options, "items", "expect_column_values_to_be_in_set", "correct_in_options"),
    (duplicate_option_text, "items", "expect_column_values_to_be_in_set", "correct_option_distinct"),
    (empty_cloze_answer, "items", "expect_column_value_lengths_to_be_between", "cloze_answer"),
    (cloze_without_blank, "items", "expect_column_values_to_be_in_set", "has_blank"),
    (undecodable_image, "images", "expect_column_values_to_be_in_set", "image_decodes"),
    (wrong_image_size, "images", "expect_column_values_to_be_between", "image_width"),
    (grayscale_pose, "images", "expect_column_values_to_be_in_set", "image_mode"),
    (unknown_test_id, "test_links", "expect_column_values_to_be_in_set", "profile_id"),
    (missing_question, "counts", "expect_column_pair_values_to_be_equal", "count==expected"),
]


def test_clean_benchmark_passes_every_suite(project, benchmark_dir, capsys):
    code, out, err = run_cli(["validate"], capsys)
    assert code == 0, err
    report = _report(project)
    assert report["passed"] == 1 and report["failures"] == []
    assert set(report["suites"]) == {"profiles", "images", "items", "test_links", "counts"}
    assert report["counts"]["profiles"] == 20 and report["counts"]["qa_items"] == (20 + 4 + 20) * 14


@pytest.mark.parametrize(("corrupt", "suite", "expectation", "column"), CORRUPTIONS,
                         ids=[c[0].__name__ for c in CORRUPTIONS])
def test_each_defect_fails_validate_and_is_named(project, benchmark_dir, capsys, corrupt, suite, expectation, column):
    corrupt(benchmark_dir)
    code, _, err = run_cli(["validate"], capsys)
    assert code != 0
    assert expectation in err and err.count("\n") == 1, err  # one clear line
    failures = _report(project)["failures"]
    named = [f for f in failures if f["suite"] == suite and f["expectation"] == expectation and f["column"] == column]
    assert named, failures
    assert named[0]["severity"] == "critical" and named[0]["unexpected_count"] >= 1
    assert named[0]["examples"] and named[0]["examples"][0]["profile_id"]


def test_a_benchmark_generated_with_other_data_settings_is_named(project, benchmark_dir, capsys):
    """params.yaml's data section changed after the data was generated: the study would have run on the old
    data without a word (the fetch found it matching data.dvc)."""
    from tests.conftest import SMALL_DATA, write_params

    write_params(project, data={**SMALL_DATA, "num_profiles": 30, "seed": 8})
    code, _, err = run_cli(["validate"], capsys)
    assert code != 0 and err.count("\n") == 1, err
    assert "data.num_profiles: 20 → 30; data.seed: 7 → 8" in err and "`mmunlearn data fetch` regenerates it" in err
    assert not (project / "metrics" / "data_quality.json").exists()
    write_params(project, data={**SMALL_DATA, "pull_timeout_s": 5})  # how data is fetched is not what it is
    assert run_cli(["validate"], capsys)[0] == 0


def test_split_refuses_data_that_failed_validation(project, benchmark_dir, capsys, caplog):
    """By hand (not through dvc repro), `split` wrote a split of data `validate` had just failed."""
    import logging

    with caplog.at_level(logging.WARNING, logger="mmunlearn.data.validation"):
        assert run_cli(["split"], capsys)[0] == 0  # never validated: split, with a word
    assert "has not been validated" in caplog.text
    shutil.copytree(benchmark_dir, project / "clean")
    duplicate_id(benchmark_dir)
    assert run_cli(["validate"], capsys)[0] != 0
    shutil.rmtree(project / "data" / "splits")
    code, _, err = run_cli(["split"], capsys)
    assert code != 0 and "failed validation (2 critical failure(s)" in err and "run `mmunlearn validate` again" in err
    assert not (project / "data" / "splits").exists()
    shutil.rmtree(benchmark_dir)
    shutil.copytree(project / "clean", benchmark_dir)  # fixed, not validated again
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="mmunlearn.data.validation"):
        assert run_cli(["split"], capsys)[0] == 0  # the failed report was of other data
    assert "has not been validated" in caplog.text
    assert run_cli(["validate"], capsys)[0] == 0 and run_cli(["split"], capsys)[0] == 0


def test_validate_speaks_in_our_lines_only(project, benchmark_dir):
    """great-expectations logged 200+ INFO lines a run (its loggers pinned at INFO) around our report."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "mmunlearn", "validate"], cwd=project, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "GX_ANALYTICS_ENABLED": "false"})
    assert done.returncode == 0, done.stderr
    assert "data quality: all critical expectations passed" in done.stdout
    lines = done.stderr.splitlines()
    assert lines and all(line.startswith("INFO mmunlearn.") for line in lines), lines[:5]


def test_expectation_suite_files_are_checked(project, benchmark_dir, capsys):
    (project / "expectations" / "items.json").write_text("{ not json")
    code, _, err = run_cli(["validate"], capsys)
    assert code == 2 and "expectations/items.json" in err and "not valid JSON" in err
