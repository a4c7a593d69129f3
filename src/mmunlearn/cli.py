"""Command line: one sub-command per stage; dvc.yaml calls these. Parsing only — work lives in modules."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from mmunlearn.config import DEFAULT_PARAMS_FILE, Params, load_params
from mmunlearn.errors import DataError, MmunlearnError, ValidationFailed

app = typer.Typer(help="Unlearning private information in multimodal LLMs.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)
data_app = typer.Typer(help="Benchmark data: generate or fetch.", no_args_is_help=True)
app.add_typer(data_app, name="data")
log = logging.getLogger("mmunlearn")


@app.callback()
def _main(
    ctx: typer.Context,
    params: Annotated[Path, typer.Option("--params", "-p", help="params file")] = DEFAULT_PARAMS_FILE,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    # our progress at INFO; libraries only from WARNING (great-expectations alone logged 200+ INFO lines
    # a validation) unless --verbose asks for everything
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    log.setLevel(logging.DEBUG if verbose else logging.INFO)
    ctx.obj = params


def _params(ctx: typer.Context) -> Params:
    return load_params(ctx.obj)


@data_app.command("synth")
def data_synth(ctx: typer.Context,
               out: Annotated[Path | None, typer.Option(help="output folder (default: paths.benchmark)")] = None) -> None:
    """Generate the deterministic synthetic benchmark from params `data:`."""
    from mmunlearn.data.fetch import synthesise

    synthesise(_params(ctx), out)


@data_app.command("fetch")
def data_fetch(ctx: typer.Context) -> None:
    """Materialise data/benchmark: dvc pull from a remote, else regenerate."""
    from mmunlearn.data.fetch import fetch

    how = fetch(_params(ctx))
    typer.echo(f"benchmark {how}")


def _save_imported(ctx: typer.Context, benchmark, out: Path | None) -> Path:
    """Write an imported benchmark to ``out`` (default: paths.benchmark) whole or not at all."""
    from mmunlearn.atomic import atomic_dir
    from mmunlearn.data.schema import MANIFEST_FILE, save_benchmark

    target = Path(out or _params(ctx).paths.benchmark)
    with atomic_dir(target, marks=(MANIFEST_FILE,)) as staging:
        save_benchmark(staging, benchmark)
    return target


@data_app.command("import-unlok")
def data_import_unlok(
    ctx: typer.Context,
    records: Annotated[Path, typer.Argument(help="the released UnLOK-VQA records (JSON list or JSON lines)")],
    images: Annotated[Path, typer.Option(help="folder holding coco2017/ and the paraphrase-image folders")],
    out: Annotated[Path | None, typer.Option(help="output folder (default: paths.benchmark)")] = None,
) -> None:
    """Import a local copy of UnLOK-VQA into the benchmark layout, for the same split/unlearn/attack study."""
    from mmunlearn.data.unlok import import_unlok

    benchmark = import_unlok(records, images)
    target = _save_imported(ctx, benchmark, out)
    typer.echo(f"import-unlok: {len(benchmark.full)} records → {target} "
               f"(pose rungs {benchmark.manifest['pose_rungs']}; set data.test_pose_difficulties to match)")


@data_app.command("import-mllmu")
def data_import_mllmu(
    ctx: typer.Context,
    release: Annotated[Path, typer.Argument(help="a local copy of the MLLMU-Bench release (Full_Set/, ft_Data/, "
                                                 "Test_Set/, Retain_Set/, forget_5|10|15/)")],
    out: Annotated[Path | None, typer.Option(help="output folder (default: paths.benchmark)")] = None,
) -> None:
    """Import a local copy of the official MLLMU-Bench release into the benchmark layout, its forget sets kept."""
    from mmunlearn.data.mllmu import import_mllmu

    benchmark = import_mllmu(release)
    target = _save_imported(ctx, benchmark, out)
    poses, forget = benchmark.manifest["test_pose_difficulties"], benchmark.manifest["forget_ids"]
    typer.echo(f"import-mllmu: {len(benchmark.full)} profiles, {len(benchmark.celebrity)} celebrities → {target} "
               f"(poses {poses}: set data.test_pose_difficulties and split.test_image_difficulty from them; "
               f"the release's forget sets {sorted(forget, key=int)} % are used by split.forget_percent)")


@app.command("validate")
def validate(ctx: typer.Context) -> None:
    """Run the expectation suites; write metrics/data_quality.json; fail on a critical defect."""
    from mmunlearn.atomic import write_json
    from mmunlearn.data.schema import load_benchmark
    from mmunlearn.data.synthetic import settings_changed_since
    from mmunlearn.data.validation import (
        DIGEST_KEY,
        benchmark_digest,
        describe_failures,
        quality_report_path,
        validate_benchmark,
    )

    params = _params(ctx)
    benchmark = load_benchmark(params.paths.benchmark)
    changed = settings_changed_since(benchmark.manifest, params.data)
    if changed and params.data.source == "synthetic":  # else the study would run on the old settings' data
        raise DataError(f"{params.paths.benchmark} was generated with other settings than {params.source} asks "
                        f"({'; '.join(changed)}): `mmunlearn data fetch` regenerates it (`dvc commit "
                        f"{params.paths.data_dvc}` then records the new version)")
    report = validate_benchmark(benchmark, params.paths.expectations, params.validate_.example_rows)
    report_path = quality_report_path(params.paths.metrics)
    write_json(report_path, {**report.payload, DIGEST_KEY: benchmark_digest(params.paths.benchmark)})
    if not report.passed:
        raise ValidationFailed(f"{describe_failures(report.critical_failures)}; see {report_path}")
    typer.echo(f"data quality: all critical expectations passed ({report_path})")


@app.command("split")
def split(ctx: typer.Context) -> None:
    """Write the forget/retain/test/celebrity split."""
    from mmunlearn.data.schema import load_benchmark
    from mmunlearn.data.splits import make_split, save_split
    from mmunlearn.data.validation import quality_report_path, require_validated

    params = _params(ctx)
    benchmark = load_benchmark(params.paths.benchmark)
    require_validated(quality_report_path(params.paths.metrics), params.paths.benchmark)
    result = make_split(benchmark, params.split)
    save_split(result, params.paths.splits)
    typer.echo(f"split: {result.manifest['counts']}")


@app.command("base")
def base(ctx: typer.Context) -> None:
    """Build (tiny default) or resolve (hub id / folder) the starting model."""
    from mmunlearn.methods import check_methods
    from mmunlearn.models.base import build_base

    params = _params(ctx)
    check_methods(params)  # the pipeline's first training stage: a misspelt objective fails here
    typer.echo(f"base: {build_base(params)}")


@app.command("finetune")
def finetune(ctx: typer.Context,
             subset: Annotated[str, typer.Option(help="all: the vanilla model; retain: the retain-only reference")] = "all",
             ) -> None:
    """LoRA-fine-tune on the fictitious profiles (all → models/vanilla, retain → models/retain)."""
    from mmunlearn.errors import ConfigError
    from mmunlearn.methods import check_methods
    from mmunlearn.training.stages import finetune as run_finetune

    if subset not in ("all", "retain"):
        raise ConfigError(f"--subset {subset!r}: expected 'all' or 'retain'")
    params = _params(ctx)
    check_methods(params)
    typer.echo(f"finetune: {run_finetune(params, subset)}")


@app.command("unlearn")
def unlearn(ctx: typer.Context, method: Annotated[str, typer.Option(help="a key of params.yaml methods:")],
            modality: Annotated[str, typer.Option(help="multimodal (face + question) or text (by name)")] = "multimodal",
            ) -> None:
    """Unlearn the forget set from the vanilla model with one method, in one unlearning modality."""
    from mmunlearn.training.stages import unlearn as run_unlearn

    typer.echo(f"unlearn: {run_unlearn(_params(ctx), method, modality)}")


@app.command("evaluate")
def evaluate(ctx: typer.Context,
             model: Annotated[str, typer.Option(help="vanilla, or an unlearned model <method>-<modality>")]) -> None:
    """Evaluate one model on every set, modality and metric."""
    from mmunlearn.evaluation.stage import evaluate_stage, metrics_path

    params = _params(ctx)
    evaluate_stage(params, model)
    typer.echo(f"evaluate: {metrics_path(params, model)}")


@app.command("attack")
def attack(ctx: typer.Context,
           model: Annotated[str, typer.Option(help="vanilla, or an unlearned model <method>-<modality>")]) -> None:
    """Run every white-box and black-box extraction attack on one model's forget facts."""
    from mmunlearn.attacks.stage import attack_metrics_path, attack_stage

    params = _params(ctx)
    attack_stage(params, model)
    typer.echo(f"attack: {attack_metrics_path(params, model)}")


@app.command("protocols")
def protocols(ctx: typer.Context,
              model: Annotated[str, typer.Option(help="a model of the study")] = "vanilla") -> None:
    """Answer every multiple-choice question with the fast and the official protocol; report agreement."""
    from mmunlearn.evaluation.stage import agreement_report_path, protocols_stage

    params = _params(ctx)
    summary = protocols_stage(params, model)
    typer.echo(f"protocols: {summary['overall']['agreement']:.1%} agreement on {summary['overall']['n']} "
               f"multiple-choice questions, {summary['overall']['zero_shot_agreement']:.1%} without the official "
               f"few-shot prompt ({agreement_report_path(params)})")


@app.command("tune")
def tune(ctx: typer.Context, method: Annotated[str, typer.Option(help="a key of params.yaml methods:")],
         trials: Annotated[int | None, typer.Option(min=1, help="budget (default: tune.trials)")] = None) -> None:
    """Work on a method's Optuna trade-off study (any number of workers may share it); write its front."""
    from mmunlearn.tuning.outputs import summary_path
    from mmunlearn.tuning.study import tune as run_tune

    params = _params(ctx)
    summary = run_tune(params, method, trials)
    counts = summary["trials"]
    typer.echo(f"tune {method}: {counts['complete']} complete, {counts['pruned']} pruned, {counts['fail']} failed; "
               f"front of {len(summary['front'])}; this worker ran trials {summary['ran_here']} "
               f"({summary_path(params, method)})")


@app.command("tune-report")
def tune_report(ctx: typer.Context) -> None:
    """Overlay every method's Pareto front; Optuna HTML plots; operating points for params.yaml."""
    from mmunlearn.tuning.outputs import tune_report as write

    typer.echo(f"tune-report: {write(_params(ctx))}")


@app.command("report")
def report(ctx: typer.Context) -> None:
    """Write the Table-2-style report from every evaluated model's metrics."""
    from mmunlearn.report import write_report

    typer.echo(f"report: {write_report(_params(ctx))}")


def main() -> None:
    try:
        app()
    except MmunlearnError as exc:
        typer.echo(f"mmunlearn: error: {exc}", err=True)
        sys.exit(getattr(exc, "exit_code", 2))
