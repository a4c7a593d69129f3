"""Opening a shared store: a racing worker's failure is retried, a lasting one is named at once."""

import sqlite3

import pytest

from mmunlearn.errors import ConfigError
from mmunlearn.stores import open_shared_store


def test_a_file_that_is_no_database_fails_at_the_first_try(tmp_path, monkeypatch):
    """It was tried five times, ~10 s of sleeps, before the same one-line error."""
    slept = []
    monkeypatch.setattr("mmunlearn.stores.time.sleep", slept.append)
    store = tmp_path / "mlflow.db"
    store.write_text("not a database")
    tries = []

    def open_store():
        tries.append(1)
        with sqlite3.connect(store) as connection:
            return connection.execute("SELECT name FROM sqlite_master").fetchall()

    with pytest.raises(ConfigError, match=r"^the store cannot be opened \(DatabaseError: file is not a database\); fix it$"):
        open_shared_store(open_store, "the store", "fix it")
    assert (len(tries), slept) == (1, [])


def test_a_missing_driver_fails_at_the_first_try(monkeypatch):
    slept = []
    monkeypatch.setattr("mmunlearn.stores.time.sleep", slept.append)

    def open_store():
        import mmunlearn_no_such_driver  # noqa: F401

    with pytest.raises(ConfigError, match="ModuleNotFoundError"):
        open_shared_store(open_store, "the store", "fix it")
    assert slept == []


def test_a_store_locked_by_a_racing_worker_is_tried_again(tmp_path, monkeypatch):
    slept = []
    monkeypatch.setattr("mmunlearn.stores.time.sleep", slept.append)
    store = tmp_path / "optuna.db"
    holder = sqlite3.connect(store, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another worker creating the tables

    def open_store():
        if len(slept) == 2:
            holder.execute("COMMIT")
        with sqlite3.connect(store, timeout=0) as connection:
            return connection.execute("SELECT name FROM sqlite_master").fetchall()

    assert open_shared_store(open_store, "the store", "fix it") == []
    assert slept == [1, 2]
