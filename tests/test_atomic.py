"""All-or-nothing outputs: what they replace, and the permissions they are left with."""

import os
import stat

import pytest

from mmunlearn.atomic import atomic_dir, write_json
from mmunlearn.errors import DataError


def test_an_earlier_output_or_an_empty_folder_is_replaced(tmp_path):
    earlier, empty = tmp_path / "splits", tmp_path / "empty"
    earlier.mkdir(), empty.mkdir()
    (earlier / "split.json").write_text("{}")
    (earlier / "old.parquet").write_text("old")
    for target in (earlier, empty):
        with atomic_dir(target, marks=("split.json",)) as staging:
            (staging / "split.json").write_text('{"new": 1}')
        assert sorted(p.name for p in target.iterdir()) == ["split.json"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging or retired folder left


def test_a_folder_the_writer_did_not_make_is_never_replaced(tmp_path):
    """`data synth --out data` wiped data/ (its splits, the user's notes) and exited 0."""
    data = tmp_path / "data"
    (data / "splits").mkdir(parents=True)
    (data / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match=rf"^{data}: holds files this command did not write \(notes.txt, splits\)"):
        with atomic_dir(data, marks=("manifest.json",)) as staging:
            (staging / "manifest.json").write_text("{}")
    assert (data / "notes.txt").read_text() == "mine" and (data / "splits").is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_a_folder_filled_by_someone_else_during_the_work_is_kept(tmp_path):
    target = tmp_path / "benchmark"
    with pytest.raises(DataError, match="did not write"):
        with atomic_dir(target, marks=("manifest.json",)) as staging:
            (staging / "manifest.json").write_text("{}")
            target.mkdir()
            (target / "import.parquet").write_text("theirs")
    assert [p.name for p in target.iterdir()] == ["import.parquet"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["benchmark"]


def test_a_file_is_not_turned_into_a_folder(tmp_path):
    """It was, with a stray `.name.old-<pid>` file left beside it."""
    target = tmp_path / "benchmark"
    target.write_text("a file")
    with pytest.raises(DataError, match="is a file, not a folder"):
        with atomic_dir(target, marks=("manifest.json",)):
            pass
    assert target.read_text() == "a file" and sorted(p.name for p in tmp_path.iterdir()) == ["benchmark"]


def test_outputs_get_the_permissions_the_umask_gives(tmp_path):
    """Temporary files and folders are owner-only (0600 / 0700): outputs kept those, unreadable to others."""
    previous = os.umask(0o022)
    try:
        write_json(tmp_path / "metrics" / "m.json", {"a": 1})
        with atomic_dir(tmp_path / "splits", marks=("split.json",)) as staging:
            (staging / "split.json").write_text("{}")
            (staging / "images").mkdir(mode=0o700)
            weights = staging / "images" / "adapter_model.safetensors"
            weights.write_bytes(b"w")
            weights.chmod(0o600)  # as safetensors' save_file leaves it
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "metrics" / "m.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "splits").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "splits" / "images").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "splits" / "images" / "adapter_model.safetensors").stat().st_mode) == 0o644


def test_a_folder_that_cannot_be_written_is_named(tmp_path):
    """`data synth --out /proc/nope` was a FileNotFoundError traceback from deep in tempfile."""
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    with pytest.raises(DataError, match=r"a-file/out: cannot write there"):
        with atomic_dir(blocked / "out", marks=("manifest.json",)):
            pass
    with pytest.raises(DataError, match=r"a-file/metrics.json: cannot write there"):
        write_json(blocked / "metrics.json", {"a": 1})
    assert blocked.read_text() == "not a folder"
