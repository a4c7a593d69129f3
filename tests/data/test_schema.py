from __future__ import annotations

import json

import pyarrow.parquet as pq

from mmunlearn.config import DataConfig
from mmunlearn.data.schema import Benchmark, load_benchmark, read_profiles, save_benchmark, write_profiles
from mmunlearn.data.synthetic import generate_benchmark
from tests.conftest import SMALL_DATA


def test_benchmark_round_trips_through_the_official_layout(tmp_path):
    benchmark = generate_benchmark(DataConfig(**SMALL_DATA))
    save_benchmark(tmp_path, benchmark)
    assert load_benchmark(tmp_path) == benchmark

    table = pq.read_table(tmp_path / "full.parquet")
    for column in ("ID", "image", "Classification_Task", "Generation_Task", "Mask_Task", "metadata"):
        assert column in table.column_names
    row = table.slice(0, 1).to_pylist()[0]
    assert set(row["Classification_Task"]) == {"Image_Textual_Questions", "Pure_Text_Questions"}
    question = row["Classification_Task"]["Image_Textual_Questions"][0]
    assert set(question["Options"]) == {"A", "B", "C", "D"} and question["Correct_Answer"] in "ABCD"
    assert {entry["Type"] for entry in row["Generation_Task"]} == {"Image_Textual", "Pure_Text"}
    assert all("__" in entry["Question"] for entry in row["Mask_Task"])
    assert row["image"]["bytes"][:8] == b"\x89PNG\r\n\x1a\n"
    pairs = json.loads(row["metadata"])
    assert pairs and {"Question", "Answer"} <= set(pairs[0])


def test_reader_keeps_defects_visible_for_validation(tmp_path):
    profile = generate_benchmark(DataConfig(**SMALL_DATA)).full[0]
    item = profile.items[0]
    five = type(item)(item.task, item.modality, item.question, item.ground_truth,
                      {**item.options, "E": "an extra option"}, item.correct, item.attribute)
    from dataclasses import replace

    path = tmp_path / "five.parquet"
    # a struct column cannot hold a fifth letter in our schema; an official-style file can, so write one
    import pyarrow as pa

    from mmunlearn.data import schema

    rows = [schema._profile_row(replace(profile, items=(five, *profile.items[1:])))]
    rows[0]["Classification_Task"]["Image_Textual_Questions"][0]["Options"]["E"] = "an extra option"
    pq.write_table(pa.Table.from_pylist(rows), path)
    assert len(read_profiles(path)[0].items[0].options) == 5


def test_empty_benchmark_round_trips(tmp_path):
    empty = Benchmark((), (), (), {"note": "empty"})
    save_benchmark(tmp_path, empty)
    assert load_benchmark(tmp_path) == empty
    write_profiles(tmp_path / "x.parquet", [])
    assert read_profiles(tmp_path / "x.parquet") == ()
