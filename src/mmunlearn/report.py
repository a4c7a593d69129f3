"""Paper-style tables: MLLMU-Bench Table 2 layout (set × classification, ROUGE-L, factuality, cloze)."""

from __future__ import annotations

from collections.abc import Mapping

from mmunlearn.evaluation.run import EVALUATED_SETS

COLUMNS = (("mcq_acc", "Class. ↑"), ("rouge_l", "ROUGE-L"), ("factuality", "Fact."), ("cloze_acc", "Cloze"))
SET_TITLES = {"forget": "Forget", "test": "Test", "retain": "Retain", "celebrity": "Celebrity"}


def _cell(value) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3f}"


def table_rows(results_by_model: Mapping[str, Mapping], modality: str) -> list[list[str]]:
    rows = []
    for model, results in results_by_model.items():
        row = [model]
        for set_name in EVALUATED_SETS:
            cell = results.get(set_name, {}).get(modality, {})
            row += [_cell(cell.get(metric)) for metric, _ in COLUMNS]
        rows.append(row)
    return rows


def markdown_table(results_by_model: Mapping[str, Mapping]) -> str:
    """One table per modality: rows are models, column groups are the four sets."""
    header = ["Model"] + [f"{SET_TITLES[s]} {title}" for s in EVALUATED_SETS for _, title in COLUMNS]
    parts = []
    for modality, title in (("image", "Image + text (multimodal)"), ("text", "Text only")):
        lines = [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in table_rows(results_by_model, modality)]
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def csv_table(results_by_model: Mapping[str, Mapping]) -> str:
    lines = ["model,modality,set,metric,value"]
    for model, results in results_by_model.items():
        for set_name in EVALUATED_SETS:
            for modality in ("image", "text"):
                cell = results.get(set_name, {}).get(modality, {})
                lines += [f"{model},{modality},{set_name},{metric},{cell.get(metric, '')}" for metric, _ in COLUMNS]
    return "\n".join(lines) + "\n"
