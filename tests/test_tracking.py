from __future__ import annotations

from mlflow.tracking import MlflowClient

from mmunlearn.config import TrackingConfig
from mmunlearn.tracking import find_runs, flatten, log_artifacts, log_metrics, public_params, stage_run


def test_flatten_and_secret_filtering():
    tree = {"forget": {"image": {"mcq_acc": 0.5}}, "judge": {"api_key": "sk-live", "model": "gpt-4o"}}
    assert flatten(tree) == {"forget.image.mcq_acc": 0.5, "judge.api_key": "sk-live", "judge.model": "gpt-4o"}
    assert public_params(tree) == {"forget.image.mcq_acc": 0.5, "judge.model": "gpt-4o"}


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
    assert run.data.metrics == {"forget.image.mcq_acc": 0.25}
    assert run.data.params["unlearn.ga.lr"] == "1e-05" and "judge.api_key" not in run.data.params
    artifacts = [a.path for a in MlflowClient(config.uri).list_artifacts(run.info.run_id, "adapter")]
    assert artifacts == ["adapter/adapter_config.json"]
    assert find_runs(config, stage="finetune") == []
