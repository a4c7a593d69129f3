"""Paper-style tables: MLLMU-Bench Table 2 layout (set × classification, ROUGE-L, factuality, cloze)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from mmunlearn.atomic import write_text
from mmunlearn.config import Params, parse_model_id
from mmunlearn.errors import DataError
from mmunlearn.evaluation.run import EVALUATED_SETS

COLUMNS = (("mcq_acc", "Class. ↑"), ("rouge_l", "ROUGE-L"), ("factuality", "Fact."), ("cloze_acc", "Cloze"))
SET_TITLES = {"forget": "Forget", "test": "Test", "retain": "Retain", "celebrity": "Celebrity"}


def _cell(value) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3f}"


def table_rows(results_by_model: Mapping[tuple[str, str], Mapping], modality: str) -> list[list[str]]:
    rows = []
    for (title, unlearned_on), results in results_by_model.items():
        row = [title, unlearned_on]
        for set_name in EVALUATED_SETS:
            cell = results.get(set_name, {}).get(modality, {})
            row += [_cell(cell.get(metric)) for metric, _ in COLUMNS]
        rows.append(row)
    return rows


def markdown_table(results_by_model: Mapping[tuple[str, str], Mapping]) -> str:
    """One table per evaluation modality: a row per model, column groups are the four sets."""
    header = ["Model", "Unlearned on"] + [f"{SET_TITLES[s]} {title}" for s in EVALUATED_SETS for _, title in COLUMNS]
    parts = []
    for modality, title in (("image", "Image + text (multimodal)"), ("text", "Text only")):
        lines = [f"### Evaluated on {title.lower()}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in table_rows(results_by_model, modality)]
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def csv_table(results_by_model: Mapping[tuple[str, str], Mapping]) -> str:
    lines = ["model,unlearned_on,modality,set,metric,value"]
    for (title, unlearned_on), results in results_by_model.items():
        for set_name in EVALUATED_SETS:
            for modality in ("image", "text"):
                cell = results.get(set_name, {}).get(modality, {})
                lines += [f"{title},{unlearned_on},{modality},{set_name},{metric},{cell.get(metric, '')}"
                          for metric, _ in COLUMNS]
    return "\n".join(lines) + "\n"


UNLEARNED_ON = {"multimodal": "image+text", "text": "text"}


def model_title(params: Params, name: str) -> tuple[str, str]:
    """(display name, unlearning modality) of a study model, e.g. ("NPO", "text")."""
    if name == "vanilla":
        return "Vanilla", "—"
    method, modality = parse_model_id(name)
    return params.methods[method].title or method, UNLEARNED_ON.get(modality, modality)


def write_report(params: Params) -> Path:
    """reports/table.md + .csv and the trade-off plots from metrics/<model>.json of every evaluated model;
    all logged to MLflow."""
    from mmunlearn import tracking
    from mmunlearn.evaluation.stage import metrics_path
    from mmunlearn.plots import write_tradeoff_plots

    results = {}
    for model in params.evaluated_models():
        path = metrics_path(params, model)
        if not path.is_file():
            raise DataError(f"{path}: not found (run `mmunlearn evaluate --model {model}`)")
        results[model_title(params, model)] = json.loads(path.read_text(encoding="utf-8"))
    folder = params.paths.reports
    write_text(folder / "table.md", "# MLLMU-Bench results (Table 2 layout)\n\n" + markdown_table(results))
    write_text(folder / "table.csv", csv_table(results))
    plots = write_tradeoff_plots(results, folder / "plots")
    with tracking.stage_run(params.tracking, "report", "all", {"models": params.evaluated_models()},
                            params.paths.data_dvc):
        tracking.log_file(folder / "table.md", "report")
        tracking.log_file(folder / "table.csv", "report")
        for path in plots:
            tracking.log_file(path, "report/plots")
    return folder / "table.md"
