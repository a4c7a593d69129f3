"""Paper-style tables: MLLMU-Bench Table 2 layout (set × classification, ROUGE-L, factuality, cloze), and
the UnLOK-VQA attack matrix (model × attack success, the pre-unlearning rate beside each)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from mmunlearn.atomic import read_json, write_text
from mmunlearn.attacks import KNOWN_FACTS, REWRITE_SCORE
from mmunlearn.config import Params, parse_model_id
from mmunlearn.errors import DataError
from mmunlearn.evaluation.run import EVALUATED_SETS

COLUMNS = (("mcq_acc", "Class."), ("rouge_l", "ROUGE-L"), ("factuality", "Fact."), ("cloze_acc", "Cloze"))
# Which way is better depends on the set, not the metric (an arrow on "Class." said higher for Forget too)
TABLE_PREAMBLE = """# MLLMU-Bench results (Table 2 layout)

Each set's multiple-choice accuracy (Class.), ROUGE-L, factuality (1–10, "n/a" without a judge) and
fill-in-the-blank accuracy (Cloze). On the Forget and Test sets lower means more forgotten; on the
Retain and Celebrity sets higher means more kept.

"""
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
    """A row per model × modality × set × metric; ``n``: the questions the value averages."""
    lines = ["model,unlearned_on,modality,set,metric,value,n"]
    for (title, unlearned_on), results in results_by_model.items():
        for set_name in EVALUATED_SETS:
            for modality in ("image", "text"):
                cell = results.get(set_name, {}).get(modality, {})
                lines += [f"{title},{unlearned_on},{modality},{set_name},{metric},{cell.get(metric, '')},"
                          f"{cell.get(f'n_{metric}', '')}" for metric, _ in COLUMNS]
    return "\n".join(lines) + "\n"


FACT_MODALITIES = (("image", "Facts asked with the face"), ("text", "Facts asked by name"))


def _attack_cell(cell: Mapping | None) -> str:
    if not cell:
        return "—"
    before = cell.get("before")
    return _cell(cell.get("success")) + (f" ({_cell(before)})" if before is not None else "")


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def attack_markdown(summaries: Mapping[tuple[str, str], Mapping], attacks: tuple[str, ...]) -> str:
    """A table per fact modality: a row per model, a column per attack; "after (before)" success rates,
    the column header carrying the attack's mean budget B."""
    parts = []
    for modality, title in FACT_MODALITIES:
        shown = [a for a in attacks if any(modality in s.get(a, {}) for s in summaries.values())]
        # the mean over the models (it was the first model's: GA's PD budget 23 read "B≈18", the vanilla's)
        budgets = {a: _mean([s[a][modality]["budget"] for s in summaries.values() if modality in s.get(a, {})])
                   for a in shown}
        header = ["Model", "Unlearned on", "Rewrite score"] + [f"{a} (B≈{budgets[a]:.0f})" for a in shown]
        lines = [f"### {title}", ""]
        counts = [s[KNOWN_FACTS][modality] for s in summaries.values() if modality in s.get(KNOWN_FACTS, {})]
        if counts:
            lines += [f"Scored on the {counts[0]['n']} of {counts[0]['of']} facts the vanilla model knew.", ""]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for (name, unlearned_on), summary in summaries.items():
            deleted = summary.get(REWRITE_SCORE, {}).get(modality, {}).get("score")
            cells = [_attack_cell(summary.get(a, {}).get(modality)) for a in shown]
            lines.append("| " + " | ".join([name, unlearned_on, _cell(deleted) if deleted is not None else "—",
                                           *cells]) + " |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def attack_csv(summaries: Mapping[tuple[str, str], Mapping]) -> str:
    """A row per model × attack × fact modality; the ``rewrite_score`` rows hold the mean rewrite score
    under ``success`` and the mean fact probability before unlearning under ``before``."""
    lines = ["model,unlearned_on,fact_modality,attack,success,before,budget,n"]
    for (name, unlearned_on), summary in summaries.items():
        for modality, cell in sorted(summary.get(REWRITE_SCORE, {}).items()):
            if "score" in cell:
                lines.append(f"{name},{unlearned_on},{modality},{REWRITE_SCORE},{cell['score']},{cell['before']},,"
                             f"{cell['n']}")
        for attack, by_modality in summary.items():
            if attack in (REWRITE_SCORE, KNOWN_FACTS):
                continue
            for modality, cell in sorted(by_modality.items()):
                before = "" if cell.get("before") is None else cell["before"]
                lines.append(f"{name},{unlearned_on},{modality},{attack},{cell['success']},{before},"
                             f"{cell['budget']},{cell['n']}")
    return "\n".join(lines) + "\n"


UNLEARNED_ON = {"multimodal": "image+text", "text": "text"}


def model_title(params: Params, name: str) -> tuple[str, str]:
    """(display name, unlearning modality) of a study model, e.g. ("NPO", "text")."""
    if name == "vanilla":
        return "Vanilla", "—"
    method, modality = parse_model_id(name)
    return params.methods[method].title or method, UNLEARNED_ON.get(modality, modality)


def _read_each(params: Params, path_of, command: str, check=None) -> dict[tuple[str, str], dict]:
    """Every evaluated model's JSON results by (title, unlearned on); a missing file names the command.
    ``check(path, results)``: raise a DataError when the results are not laid out as expected."""
    results = {}
    for model in params.evaluated_models():
        path = path_of(params, model)
        if not path.is_file():
            raise DataError(f"{path}: not found (run `mmunlearn {command} --model {model}`)")
        results[model_title(params, model)] = read_json(path)
        if check is not None:
            check(path, results[model_title(params, model)])
    return results


def check_evaluation_layout(path: Path, results: Mapping) -> None:
    """{set: {modality: {metric: value}}}, as `mmunlearn evaluate` writes it (a hand-edited or foreign file
    failed the report with an AttributeError)."""
    for set_name in EVALUATED_SETS:
        cells = results.get(set_name, {})
        if not isinstance(cells, Mapping) or not all(isinstance(cell, Mapping) for cell in cells.values()):
            raise DataError(f"{path}: {set_name}: expected {{modality: {{metric: value}}}}, found {cells!r:.80}; "
                            "rebuild it (`mmunlearn evaluate`)")


ATTACK_PREAMBLE = """# Extraction attacks on the forget facts (UnLOK-VQA)

Attack success rate on each model, the vanilla model's rate (before unlearning) in brackets; B is the
attack's mean budget (candidate tokens for white-box attacks, sampled replies for black-box ones). As
UnLOK-VQA does, the rates count the facts the vanilla model knew (`attack.known_min_probability`,
`attack.known_generated`): one it never knew is not deleted by unlearning.
Lower is better for the defender. The rewrite score is what unlearning removed before any attack: the
mean over the facts of 1 − p_after / p_before of each fact's probability (1: gone, 0: unchanged;
clipped at −1). A fact kept likely but hidden from the attacks is not deleted.

"""


def _optional_json(path: Path) -> dict | None:
    """A metrics file the notes quote where it is there (the protocol comparison is a stage of its own)."""
    return read_json(path) if path.is_file() else None


def write_report(params: Params) -> Path:
    """reports/table.md + .csv, the trade-off plots and reports/attacks.md + .csv from every evaluated
    model's metrics; all logged to MLflow."""
    from mmunlearn import tracking
    from mmunlearn.attacks.stage import attack_metrics_path, attack_names
    from mmunlearn.data.validation import quality_report_path
    from mmunlearn.evaluation.stage import agreement_metrics_path, metrics_path
    from mmunlearn.plots import write_tradeoff_plots
    from mmunlearn.report_notes import attack_notes, table_setting

    results = _read_each(params, metrics_path, "evaluate", check_evaluation_layout)
    attacks = _read_each(params, attack_metrics_path, "attack")
    folder = params.paths.reports
    written = [folder / "table.md", folder / "table.csv", folder / "attacks.md", folder / "attacks.csv"]
    setting = table_setting(params, results, _optional_json(quality_report_path(params.paths.metrics)),
                            _optional_json(agreement_metrics_path(params)))
    write_text(written[0], TABLE_PREAMBLE + setting + markdown_table(results))
    write_text(written[1], csv_table(results))
    write_text(written[2], ATTACK_PREAMBLE + attack_notes(params)
               + attack_markdown(attacks, attack_names(params.data.test_pose_difficulties)))
    write_text(written[3], attack_csv(attacks))
    plots = write_tradeoff_plots(results, folder / "plots")
    with tracking.stage_run(params.tracking, "report", "all", {"models": params.evaluated_models()},
                            params.paths.data_dvc):
        for path in written:
            tracking.log_file(path, "report")
        for path in plots:
            tracking.log_file(path, "report/plots")
    return folder / "table.md"
