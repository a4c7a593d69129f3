from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from mmunlearn.config import TrackingConfig
from mmunlearn.errors import ConfigError
from mmunlearn.tracking import (
    find_runs,
    flatten,
    log_artifacts,
    log_metrics,
    log_metrics_to,
    public_params,
    set_tags,
    stage_run,
)


def test_flatten_and_secret_filtering():
    tree = {"forget": {"image": {"mcq_acc": 0.5}}, "judge": {"api_key": "sk-live", "model": "gpt-4o"}}
    assert flatten(tree) == {"forget.image.mcq_acc": 0.5, "judge.api_key": "sk-live", "judge.model": "gpt-4o"}
    assert public_params(tree) == {"forget.image.mcq_acc": 0.5, "judge.model": "gpt-4o"}


def test_params_that_count_tokens_are_logged_and_url_passwords_are_not():
    """Any name holding "token" was left out (evaluation.max_new_tokens, judge.max_tokens, its prices per
    million tokens: runs differing in them looked alike), while a password in a base_url was logged."""
    tree = {"evaluation": {"max_new_tokens": 48, "judge": {
        "max_tokens": 16, "usd_per_million_input_tokens": 2.5, "api_key_env": "OPENAI_API_KEY",
        "base_url": "http://judge:sk-in-url@127.0.0.1:8000/v1"}},
        "hub": {"hf_token": "hf_live", "password": "pw", "secret_key": "s"}}
    assert public_params(tree) == {
        "evaluation.max_new_tokens": 48, "evaluation.judge.max_tokens": 16,
        "evaluation.judge.usd_per_million_input_tokens": 2.5, "evaluation.judge.api_key_env": "OPENAI_API_KEY",
        "evaluation.judge.base_url": "http://judge:***@127.0.0.1:8000/v1"}


def test_stage_run_is_read_back_through_the_client(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = TrackingConfig(uri=f"sqlite:///{tmp_path / 'mlflow.db'}", artifact_root=tmp_path / "artifacts",
                            experiment="study")
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    params = {"unlearn": {"ga": {"lr": 1e-5}}, "judge": {"api_key": "sk-secret"}}
    with stage_run(config, "evaluate", "ga", params):
        log_metrics({"forget": {"image": {"mcq_acc": 0.25}}, "note": "text is skipped"})
        log_artifacts(adapter, "adapter")

    runs = find_runs(config, stage="evaluate")
    assert len(runs) == 1
    run = runs[0]
    assert run.info.run_name == "evaluate:ga" and run.data.tags["model"] == "ga"
    # the machine it ran on: runs from two CPU models differ in their figures, and the tags say why
    assert run.data.tags["host.cpu_kernels"] == torch.backends.cpu.get_cpu_capability()
    assert run.data.tags["host.cpu"] not in ("", "unknown") and run.data.tags["host.threads"] == str(torch.get_num_threads())
    memory = {k: v for k, v in run.data.metrics.items() if k.startswith("host.")}
    assert {k: v for k, v in run.data.metrics.items() if k not in memory} == {"forget.image.mcq_acc": 0.25}
    # this process holds torch and MLflow: far more than 100 MiB resident; GPU figures only where one was used
    on_gpu = torch.cuda.is_available() and torch.cuda.is_initialized()
    gpu = {"host.peak_gpu_allocated_mib", "host.peak_gpu_reserved_mib"} if on_gpu else set()
    assert set(memory) == {"host.peak_rss_mib"} | gpu
    assert memory["host.peak_rss_mib"] > 100
    assert run.data.params["unlearn.ga.lr"] == "1e-05" and "judge.api_key" not in run.data.params
    artifacts = [a.path for a in MlflowClient(config.uri).list_artifacts(run.info.run_id, "adapter")]
    assert artifacts == ["adapter/adapter_config.json"]
    assert find_runs(config, stage="finetune") == []


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_runs_go_to_a_tracking_server_on_127_0_0_1(tmp_path, monkeypatch):
    """tracking.uri: http://127.0.0.1:PORT, as the README's shared server: the run is read back through it."""
    monkeypatch.chdir(tmp_path)
    port = _free_port()
    server = subprocess.Popen([str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri",
                               f"sqlite:///{tmp_path / 'server.db'}", "--host", "127.0.0.1", "--port", str(port),
                               "--workers", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        uri = f"http://127.0.0.1:{port}"
        for _ in range(120):  # the server starts in a few seconds
            try:
                urllib.request.urlopen(f"{uri}/health", timeout=1).close()
                break
            except OSError:
                time.sleep(0.5)
        config = TrackingConfig(uri=uri, artifact_root=tmp_path / "artifacts", experiment="study")
        with stage_run(config, "evaluate", "ga", {"unlearn": {"ga": {"lr": 1e-5}}}):
            log_metrics({"forget": {"image": {"mcq_acc": 0.25}}})
        (run,) = find_runs(config, stage="evaluate")
        assert MlflowClient(uri).get_run(run.info.run_id).data.metrics["forget.image.mcq_acc"] == 0.25
        assert run.data.params["unlearn.ga.lr"] == "1e-05"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def test_an_unreachable_tracking_server_is_named_without_its_password(tmp_path):
    config = TrackingConfig(uri=f"http://admin:pw-1234@127.0.0.1:{_free_port()}", artifact_root=tmp_path / "artifacts",
                            experiment="study")
    with pytest.raises(ConfigError, match=r"^tracking.uri: http://admin:\*\*\*@127.0.0.1:\d+ cannot be reached") as raised:
        with stage_run(config, "evaluate", "ga", {}):
            pass
    assert "pw-1234" not in str(raised.value)


def test_an_unreachable_tracking_server_is_named_at_once(tmp_path):
    """Nothing listens there: MLflow's client would retry for over ten minutes; the stage fails first."""
    config = TrackingConfig(uri=f"http://127.0.0.1:{_free_port()}", artifact_root=tmp_path / "artifacts",
                            experiment="study")
    with pytest.raises(ConfigError, match=r"^tracking.uri: http://127.0.0.1:\d+ cannot be reached .*sqlite"):
        with stage_run(config, "evaluate", "ga", {}):
            pass


@pytest.mark.parametrize("damage", ["not a database", "another MLflow's schema"])
def test_a_store_that_cannot_be_opened_is_named(tmp_path, monkeypatch, damage):
    """Was a traceback from SQLAlchemy or MLflow's migration check, after the retries meant for a race."""
    import sqlite3

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("mmunlearn.tracking.time.sleep", lambda seconds: None)  # the retries, not waited out
    store = tmp_path / "mlflow.db"
    config = TrackingConfig(uri=f"sqlite:///{store}", artifact_root=tmp_path / "artifacts", experiment="study")
    if damage == "not a database":
        store.write_text("not a database")
        needle = "file is not a database"
    else:
        made = tmp_path / "made.db"  # another file: this process keeps the store of a URI it opened
        with stage_run(config.model_copy(update={"uri": f"sqlite:///{made}"}), "split", "all", {}):
            pass
        shutil.copyfile(made, store)
        with sqlite3.connect(store) as connection:  # as if an older MLflow had made it
            connection.execute("UPDATE alembic_version SET version_num = '451aebb31d03'")
        needle = "mlflow db upgrade"
    with pytest.raises(ConfigError, match=f"^tracking.uri: the store sqlite:///{store} cannot be opened .*{needle}"):
        with stage_run(config, "evaluate", "ga", {}):
            pass


def _tune_run(tmp_path, monkeypatch) -> tuple[TrackingConfig, str]:
    """A finished tune run in a scratch store, for tests of writing to it from other workers."""
    monkeypatch.chdir(tmp_path)
    config = TrackingConfig(uri=f"sqlite:///{tmp_path / 'mlflow.db'}", artifact_root=tmp_path / "artifacts",
                            experiment="study")
    with stage_run(config, "tune", "study", {}):
        pass
    return config, find_runs(config, stage="tune")[0].info.run_id


def test_set_tags_survives_another_worker_inserting_the_same_tag_first(tmp_path, monkeypatch):
    """Two tune workers tag one front trial: the SQL store's read-then-insert lets the second insert fail."""
    config, run_id = _tune_run(tmp_path, monkeypatch)
    real_set_tag, calls = MlflowClient.set_tag, []

    def lose_the_race(self, run, key, value, *args, **kwargs):
        calls.append(key)
        if len(calls) == 1:  # the other worker's insert lands first; ours then fails
            real_set_tag(self, run, key, value)
            raise MlflowException("UNIQUE constraint failed: tags.key, tags.run_uuid")
        return real_set_tag(self, run, key, value, *args, **kwargs)

    monkeypatch.setattr(MlflowClient, "set_tag", lose_the_race)
    set_tags(run_id, {"pareto": "true", "rank": "1"}, config)
    tags = MlflowClient(config.uri).get_run(run_id).data.tags
    assert tags["pareto"] == "true" and tags["rank"] == "1"
    assert calls == ["pareto", "rank"]  # the lost race was not written twice: the tag already held the value


def test_a_shared_run_keeps_the_fullest_view_whatever_the_order_of_writing(tmp_path, monkeypatch):
    """Two tune workers summarise one study into its parent run; the one that saw fewer trials writes last."""
    config, run_id = _tune_run(tmp_path, monkeypatch)
    log_metrics_to(run_id, {"complete": 8, "front_size": 3}, config, step=8)
    log_metrics_to(run_id, {"complete": 6, "front_size": 2}, config, step=6)
    metrics = MlflowClient(config.uri).get_run(run_id).data.metrics
    assert metrics["complete"] == 8 and metrics["front_size"] == 3


def test_a_run_says_whether_its_code_was_edited_since_the_commit_it_names(tmp_path):
    """The committed attack figures came from runs tagged with the commit before the code that made them."""
    import subprocess

    from mmunlearn.tracking import source_edited

    package = tmp_path / "repo" / "src" / "pkg"
    package.mkdir(parents=True)
    (package / "code.py").write_text("x = 1\n")
    assert source_edited(package) == "unknown"  # not a checkout
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(tmp_path / "repo")]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "code"], check=True)
    assert source_edited(package) == "false"
    (tmp_path / "repo" / "metrics.json").write_text("{}")  # outputs beside the code do not count
    assert source_edited(package) == "false"
    (package / "code.py").write_text("x = 2\n")
    assert source_edited(package) == "true"
