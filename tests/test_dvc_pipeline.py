"""The data side of the pipeline as a new user meets it: fresh clone → fetch → dvc repro → metrics."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow
PROJECT_FILES = ("params.yaml", "dvc.yaml", "data.dvc", ".dvcignore", ".gitignore", "expectations", "src", "pipelines",
                 ".dvc/config", "data/.gitignore")


def _run(args, cwd, check=True):
    # the venv's console scripts (mmunlearn, dvc) first, as `make` puts them
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {**os.environ, "PATH": path, "GX_ANALYTICS_ENABLED": "false", "DVC_NO_ANALYTICS": "1"}
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"{args} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture
def fresh_clone(tmp_path) -> Path:
    """A copy of the committed project files in a new git repo, without the data (as after a clone)."""
    clone = tmp_path / "clone"
    for name in PROJECT_FILES:
        source = REPO_ROOT / name
        target = clone / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(source, target)
    _run(["git", "init", "-q"], clone)
    return clone


def test_fetch_regenerates_exactly_what_data_dvc_pins(fresh_clone):
    pinned = (fresh_clone / "data.dvc").read_bytes()
    fetched = _run(["mmunlearn", "data", "fetch"], fresh_clone)
    assert "benchmark generated" in fetched.stdout and "differs" not in fetched.stderr
    assert (fresh_clone / "data.dvc").read_bytes() == pinned  # not rewritten to fit
    status = _run(["dvc", "status", "data.dvc", "--json"], fresh_clone)
    assert json.loads(status.stdout) == {}, status.stdout  # up to date, and in the cache
    assert "benchmark present" in _run(["mmunlearn", "data", "fetch"], fresh_clone).stdout


def test_fetch_that_regenerates_other_bytes_says_so_and_leaves_data_dvc_as_it_was(fresh_clone):
    # dvc status calls an output that is not in the cache "not in cache" whatever the workspace holds: a
    # fetch that trusted that word once rewrote data.dvc to fit whatever it had regenerated
    pinned = (fresh_clone / "data.dvc").read_bytes()
    params = fresh_clone / "params.yaml"
    params.write_text(params.read_text().replace("seed: 1234", "seed: 1235", 1))
    fetched = _run(["mmunlearn", "data", "fetch"], fresh_clone)
    assert "benchmark generated" in fetched.stdout
    assert "differs from data.dvc" in fetched.stderr and "dvc commit data.dvc" in fetched.stderr
    assert (fresh_clone / "data.dvc").read_bytes() == pinned
    assert json.loads(_run(["dvc", "status", "data.dvc", "--json"], fresh_clone).stdout) != {}


def test_fetch_regenerates_present_data_when_the_data_settings_change(fresh_clone):
    """The pinned data was present: the fetch said "present and matches data.dvc", and the study ran on
    the old settings' data."""
    assert "benchmark generated" in _run(["mmunlearn", "data", "fetch"], fresh_clone).stdout
    params = fresh_clone / "params.yaml"
    params.write_text(params.read_text().replace("seed: 1234", "seed: 1235", 1))
    fetched = _run(["mmunlearn", "data", "fetch"], fresh_clone)
    assert "benchmark generated" in fetched.stdout and "data.seed: 1234 → 1235" in fetched.stderr
    manifest = json.loads((fresh_clone / "data/benchmark/manifest.json").read_text())
    assert manifest["params"]["seed"] == 1235
    assert "differs from data.dvc" in fetched.stderr


def test_fetch_pulls_from_a_dvc_remote(fresh_clone, tmp_path):
    _run(["mmunlearn", "data", "fetch"], fresh_clone)
    _run(["dvc", "remote", "add", "-d", "store", str(tmp_path / "remote")], fresh_clone)
    _run(["dvc", "push", "data.dvc"], fresh_clone)
    shutil.rmtree(fresh_clone / "data" / "benchmark")
    shutil.rmtree(fresh_clone / ".dvc" / "cache")
    assert "benchmark pulled" in _run(["mmunlearn", "data", "fetch"], fresh_clone).stdout
    assert json.loads(_run(["dvc", "status", "data.dvc", "--json"], fresh_clone).stdout) == {}


def test_fetch_does_not_pull_the_pinned_data_of_older_settings(fresh_clone, tmp_path):
    """With a remote, a changed data section pulled the pinned (old) data; validate then refused it."""
    _run(["mmunlearn", "data", "fetch"], fresh_clone)
    _run(["dvc", "remote", "add", "-d", "store", str(tmp_path / "remote")], fresh_clone)
    _run(["dvc", "push", "data.dvc"], fresh_clone)
    shutil.rmtree(fresh_clone / "data" / "benchmark")
    params = fresh_clone / "params.yaml"
    params.write_text(params.read_text().replace("seed: 1234", "seed: 1235", 1))
    fetched = _run(["mmunlearn", "data", "fetch"], fresh_clone)
    assert "benchmark generated" in fetched.stdout and "data.seed: 1234 → 1235" in fetched.stderr
    assert json.loads((fresh_clone / "data/benchmark/manifest.json").read_text())["params"]["seed"] == 1235


@pytest.mark.parametrize("remote", ["refusing", "silent"])
def test_fetch_regenerates_when_the_dvc_remote_fails_or_says_nothing(fresh_clone, remote):
    # silent: accepts connections (the kernel's backlog) and never answers; refusing: nothing listens
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    if remote == "refusing":
        listener.close()
    params = fresh_clone / "params.yaml"
    params.write_text(params.read_text().replace("pull_timeout_s: 300", "pull_timeout_s: 3"))
    _run(["dvc", "remote", "add", "-d", "store", f"http://127.0.0.1:{port}/store"], fresh_clone)
    try:
        fetched = _run(["mmunlearn", "data", "fetch"], fresh_clone)
    finally:
        listener.close()
    assert "benchmark generated" in fetched.stdout
    why = "dvc pull failed" if remote == "refusing" else "dvc pull brought nothing within 3.0 s (data.pull_timeout_s)"
    assert why in fetched.stderr
    assert json.loads(_run(["dvc", "status", "data.dvc", "--json"], fresh_clone).stdout) == {}


def _imported_benchmark(folder: Path) -> dict[str, bytes]:
    """A benchmark folder the generator did not write, as `mmunlearn data import-unlok` leaves one."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "manifest.json").write_text('{"source": "UnLOK-VQA"}\n')
    (folder / "full.parquet").write_bytes(b"imported rows")
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize("where", ["data/unlok", "data/benchmark"])
def test_fetch_never_replaces_data_the_generator_did_not_write(fresh_clone, where):
    # it once regenerated over an import: `make run` then studied synthetic profiles in the import's place
    pinned = (fresh_clone / "data.dvc").read_bytes()
    imported = _imported_benchmark(fresh_clone / where)
    params = fresh_clone / "params.yaml"
    params.write_text(params.read_text().replace("benchmark: data/benchmark", f"benchmark: {where}", 1))
    fetched = _run(["mmunlearn", "data", "fetch"], fresh_clone)
    assert "benchmark present" in fetched.stdout
    assert {p.name: p.read_bytes() for p in sorted((fresh_clone / where).iterdir())} == imported
    assert (fresh_clone / "data.dvc").read_bytes() == pinned
    # data.dvc pins data/benchmark: there the import is reported as differing from the pinned version
    assert ("is not what data.dvc pins" in fetched.stderr) == (where == "data/benchmark")


def test_a_pinned_data_source_is_fetched_never_generated(fresh_clone):
    params = fresh_clone / "params.yaml"
    synthetic = params.read_text()
    params.write_text(synthetic.replace("source: synthetic", "source: pinned", 1))
    refused = _run(["mmunlearn", "data", "fetch"], fresh_clone, check=False)
    assert refused.returncode == 2
    assert refused.stderr.strip().count("\n") == 0, refused.stderr
    assert "data.source is 'pinned'" in refused.stderr and "not what data.dvc pins" in refused.stderr
    assert not (fresh_clone / "data" / "benchmark").exists()

    params.write_text(synthetic)
    assert "benchmark generated" in _run(["mmunlearn", "data", "fetch"], fresh_clone).stdout
    params.write_text(synthetic.replace("source: synthetic", "source: pinned", 1))
    assert "benchmark present" in _run(["mmunlearn", "data", "fetch"], fresh_clone).stdout


def test_dvc_repro_validate_split_and_metrics_show(fresh_clone):
    _run(["mmunlearn", "data", "fetch"], fresh_clone)
    _run(["dvc", "repro", "validate", "split"], fresh_clone)
    assert (fresh_clone / "data" / "splits" / "forget.parquet").is_file()
    shown = _run(["dvc", "metrics", "show", "--json"], fresh_clone).stdout
    figures = json.loads(shown)[""]["data"]["metrics/data_quality.json"]["data"]
    assert figures["passed"] == 1 and figures["counts"]["profiles"] == 100
    # nothing changed: a second repro runs nothing
    assert "didn't change" in _run(["dvc", "repro", "validate", "split"], fresh_clone).stdout


ELSEWHERE = {"benchmark": "imports/unlok", "splits": "study/splits", "models": "study/models",
             "metrics": "study/metrics", "reports": "study/reports", "tradeoff": "study/tradeoff"}


def _point_paths_elsewhere(clone: Path, paths: dict[str, str]) -> None:
    params = clone / "params.yaml"
    text = params.read_text()
    for key, folder in paths.items():
        line = next(line for line in text.splitlines() if line.startswith(f"  {key}: "))
        text = text.replace(line, f"  {key}: {folder}", 1)
    params.write_text(text)


def test_the_pipelines_track_the_folders_params_paths_name(fresh_clone):
    # dvc.yaml named data/benchmark, models/, metrics/... itself: pointed elsewhere, the commands wrote
    # where params.yaml said and DVC looked where dvc.yaml said
    from dvc.repo import Repo

    _point_paths_elsewhere(fresh_clone, ELSEWHERE)
    with Repo(str(fresh_clone)) as repo:
        stages = [s for s in repo.index.stages if s.path.endswith("dvc.yaml")]
        tracked = {Path(o.fs_path).relative_to(fresh_clone).as_posix() for s in stages for o in [*s.deps, *s.outs]}
    assert {"imports/unlok", "study/splits", "study/models/vanilla", "study/metrics/vanilla.json",
            "study/reports/table.md", "study/tradeoff/summary.md"} <= tracked
    defaults = ("data/", "models/", "metrics/", "reports/", "pipelines/")
    assert not [path for path in tracked if path.startswith(defaults)]


def test_a_benchmark_elsewhere_is_validated_and_split_by_dvc_repro(fresh_clone):
    # the UnLOK-VQA recipe (README): an import in its own folder, paths.benchmark pointed at it
    _run(["mmunlearn", "data", "fetch"], fresh_clone)
    (fresh_clone / "imports").mkdir()
    (fresh_clone / "data" / "benchmark").rename(fresh_clone / "imports" / "unlok")
    manifest_path = fresh_clone / "imports" / "unlok" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["source"] = manifest.pop("generator")  # as an import's manifest: no generator's mark
    manifest_path.write_text(json.dumps(manifest))
    _point_paths_elsewhere(fresh_clone, {"benchmark": "imports/unlok"})
    _run(["dvc", "repro", "validate", "split"], fresh_clone)
    assert (fresh_clone / "data" / "splits" / "forget.parquet").is_file()
    assert "benchmark present" in _run(["mmunlearn", "data", "fetch"], fresh_clone).stdout  # kept, not regenerated


def test_bytecode_written_beside_the_code_changes_no_stage(fresh_clone):
    """Importing the package writes __pycache__/ into src/mmunlearn/* (unless PYTHONDONTWRITEBYTECODE is
    set): a stage's code dependency is a folder there, and must not read that as a change of code."""
    shutil.copy2(REPO_ROOT / "dvc.lock", fresh_clone / "dvc.lock")  # the code as committed
    before = _run(["dvc", "status", "base", "finetune", "--json"], fresh_clone).stdout
    _run([sys.executable, "-m", "compileall", "-q", str(fresh_clone / "src" / "mmunlearn")], fresh_clone)
    assert list((fresh_clone / "src" / "mmunlearn" / "models").glob("__pycache__/*.pyc"))
    after = _run(["dvc", "status", "base", "finetune", "--json"], fresh_clone).stdout
    assert json.loads(after) == json.loads(before)
    assert "src/mmunlearn/models" not in after


def test_changed_generator_shows_as_a_data_dvc_change(fresh_clone):
    _run(["mmunlearn", "data", "fetch"], fresh_clone)
    params = (fresh_clone / "params.yaml").read_text().replace("seed: 1234", "seed: 4321")
    (fresh_clone / "params.yaml").write_text(params)
    _run(["mmunlearn", "data", "synth"], fresh_clone)
    status = json.loads(_run(["dvc", "status", "data.dvc", "--json"], fresh_clone).stdout)
    assert status, "a regenerated benchmark with another seed must differ from data.dvc"
    before = (fresh_clone / "data.dvc").read_text()
    _run(["dvc", "commit", "-f", "data.dvc"], fresh_clone)
    assert (fresh_clone / "data.dvc").read_text() != before


def test_validate_stage_fails_the_pipeline_on_a_defect(fresh_clone):
    _run(["mmunlearn", "data", "fetch"], fresh_clone)
    benchmark = fresh_clone / "data" / "benchmark"
    manifest = json.loads((benchmark / "manifest.json").read_text())
    manifest["image_size"] = 48  # declared size no longer matches the images
    (benchmark / "manifest.json").write_text(json.dumps(manifest))
    result = _run(["dvc", "repro", "validate", "split"], fresh_clone, check=False)
    assert result.returncode != 0
    assert "expect_column_values_to_be_between(image_width)" in result.stderr + result.stdout
    report = json.loads((fresh_clone / "metrics" / "data_quality.json").read_text())
    assert report["passed"] == 0 and not (fresh_clone / "data" / "splits").exists()


def _stages_rerun_by(repo, param: str) -> set[str]:
    """Stages a change of ``param`` re-runs: those depending on it (or a section holding it), then every
    stage downstream of their outputs."""
    from dvc.dependency.param import ParamsDependency

    stages = list(repo.index.stages)

    def params_of(stage):
        return [p for dep in stage.deps if isinstance(dep, ParamsDependency) for p in (dep.params or [])]

    def feeds(upstream, stage):
        outs = [Path(str(out)) for out in upstream.outs]
        return any(out == Path(str(dep)) or out.is_relative_to(Path(str(dep))) or Path(str(dep)).is_relative_to(out)
                   for out in outs for dep in stage.deps if not isinstance(dep, ParamsDependency))

    def label(stage):  # pipeline stages by name ("unlearn@ga-text"), .dvc files by path
        return getattr(stage, "name", None) or stage.relpath

    hit = {label(s) for s in stages if any(param == p or param.startswith(p + ".") for p in params_of(s))}
    grown = True
    while grown:
        more = {label(s) for s in stages for u in stages if label(u) in hit and feeds(u, s)}
        grown = not more <= hit
        hit |= more
    return hit


def test_changing_one_methods_lr_reruns_only_that_methods_stages(fresh_clone):
    from dvc.repo import Repo

    with Repo(str(fresh_clone)) as repo:
        assert _stages_rerun_by(repo, "methods.ga.lr") == {
            "unlearn@ga-multimodal", "unlearn@ga-text", "evaluate@ga-multimodal", "evaluate@ga-text",
            "attack@ga-multimodal", "attack@ga-text", "report",
            "tune@ga", "tradeoff_report"}  # the last two only when the trade-off pipeline is run
        assert _stages_rerun_by(repo, "methods.hp_defense.lens_k") == {
            "defend@hp_defense-text", "evaluate_defense@hp_defense-text", "attack_defense@hp_defense-text", "report"}
        attack_budget = _stages_rerun_by(repo, "attack.budget")  # attacks only: no model is retrained
        assert "attack_vanilla" in attack_budget and "report" in attack_budget
        assert all(name.startswith("attack") or name == "report" for name in attack_budget)
        assert "finetune" in _stages_rerun_by(repo, "finetune.lr")  # the check can see a wider change


def test_dvc_plots_show_renders_every_tradeoff_plot_from_the_committed_report(fresh_clone):
    shutil.copytree(REPO_ROOT / "reports" / "plots", fresh_clone / "reports" / "plots")
    shown = json.loads(_run(["dvc", "plots", "show", "--json"], fresh_clone).stdout)["data"]
    models = (REPO_ROOT / "reports" / "plots" / "tradeoff_text.csv").read_text().strip().count("\n")
    for modality in ("image", "text"):
        for metric in ("mcq_acc", "rouge_l"):
            (plot,) = shown[f"tradeoff_{modality}_{metric}"]
            assert plot["type"] == "vega"
            values = plot["content"]["data"]["values"]
            assert len(values) == 2 * models  # a retain and a celebrity point per model
            assert {v["field"] for v in values} == {f"retain_{metric}", f"celebrity_{metric}"}
    for png in ("tradeoff_mcq_acc.png", "tradeoff_rouge_l.png"):
        assert shown[f"reports/plots/{png}"][0]["type"] == "image"


def test_tradeoff_pipeline_is_separate_from_the_main_study(fresh_clone):
    """`dvc repro` (make run) never runs a trade-off study; `dvc repro pipelines/tradeoff/dvc.yaml` runs
    one per tune.methods, then the overlay, on top of the main study's vanilla model."""
    import yaml
    from dvc.repo import Repo

    methods = yaml.safe_load((fresh_clone / "params.yaml").read_text())["tune"]["methods"]
    with Repo(str(fresh_clone)) as repo:
        stages = list(repo.index.stages)
        tradeoff = [s for s in stages if "pipelines" in str(s.path_in_repo)]
        main = [s for s in stages if s.path_in_repo == "dvc.yaml"]
        assert sorted(s.name for s in tradeoff) == sorted([f"tune@{m}" for m in methods] + ["tradeoff_report"])
        main_deps = [Path(str(d)) for s in main for d in s.deps]
        for stage in tradeoff:
            for out in stage.outs:
                assert not any(Path(str(out)).is_relative_to(dep) or dep.is_relative_to(Path(str(out)))
                               for dep in main_deps), (stage.name, str(out))
        tune_ga = next(s for s in tradeoff if s.name == "tune@ga")
        assert {"models/vanilla", "metrics/vanilla.json"} <= {dep.def_path for dep in tune_ga.deps}


def test_every_inference_stage_depends_on_the_code_that_loads_its_model(fresh_clone):
    """An edit of how a study model is loaded or merged (models/), or of how an interrupted run's outputs
    are read back (journal.py), re-runs the evaluations, attacks and trade-off trials, as it re-runs the
    training stages."""
    from dvc.repo import Repo

    with Repo(str(fresh_clone)) as repo:
        inference = [s for s in repo.index.stages
                     if (getattr(s, "cmd", None) or "").split()[1:2] in (["evaluate"], ["attack"], ["protocols"])]
        assert len(inference) > 10
        for stage in inference:
            deps = {dep.def_path for dep in stage.deps}
            assert {"src/mmunlearn/models", "src/mmunlearn/journal.py"} <= deps, stage.name
        tuning = [s for s in repo.index.stages if (getattr(s, "cmd", None) or "").split()[1:2] == ["tune"]]
        assert tuning and all("src/mmunlearn/models" in {dep.def_path for dep in s.deps} for s in tuning)
