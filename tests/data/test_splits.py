from __future__ import annotations

import pytest

from mmunlearn.config import DataConfig, SplitConfig
from mmunlearn.data.splits import load_split, make_split, save_split
from mmunlearn.data.synthetic import generate_benchmark
from mmunlearn.errors import DataError
from tests.conftest import SMALL_DATA


@pytest.fixture(scope="module")
def benchmark():
    return generate_benchmark(DataConfig(**{**SMALL_DATA, "num_profiles": 40}))


@pytest.mark.parametrize(("percent", "forget_count"), [(5, 2), (10, 4), (15, 6)])
def test_forget_percent_sets_the_forget_size_and_retain_is_the_rest(benchmark, percent, forget_count):
    split = make_split(benchmark, SplitConfig(forget_percent=percent))
    forget, retain = {p.id for p in split.forget}, {p.id for p in split.retain}
    assert len(forget) == forget_count
    assert not forget & retain and forget | retain == {p.id for p in benchmark.full}
    assert {p.id for p in split.test} == forget
    assert split.celebrity == benchmark.celebrity


def test_split_is_seeded(benchmark):
    ids = lambda seed: [p.id for p in make_split(benchmark, SplitConfig(seed=seed)).forget]  # noqa: E731
    assert ids(0) == ids(0)
    assert ids(0) != ids(1)


def test_split_round_trips_on_disk(benchmark, tmp_path):
    split = make_split(benchmark, SplitConfig())
    save_split(split, tmp_path / "splits")
    assert load_split(tmp_path / "splits") == split
    assert sorted(p.name for p in (tmp_path / "splits").iterdir()) == [
        "celebrity.parquet", "forget.parquet", "retain.parquet", "split.json", "test.parquet"]


def test_missing_split_names_the_file(tmp_path):
    with pytest.raises(DataError, match="split.json"):
        load_split(tmp_path / "nowhere")
