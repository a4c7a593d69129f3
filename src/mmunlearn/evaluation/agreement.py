"""Do our `fast` protocol and the official one read the same multiple-choice answers off a model?

Both protocols answer every multiple-choice question of the split; a question agrees when both
protocols are right or both are wrong (the issue's bar: ≥ 90 % on the vanilla model). Written as
``metrics/protocol_agreement.json`` and ``reports/protocol_agreement.md`` with every disagreement.
"""

from __future__ import annotations

from collections import defaultdict

from mmunlearn.data.schema import Task
from mmunlearn.data.splits import Split
from mmunlearn.evaluation.metrics import predicted_letter
from mmunlearn.evaluation.official import first_letter
from mmunlearn.evaluation.run import EvaluationSettings, fast_outputs, official_raw_replies, questions_of
from mmunlearn.journal import Journal


def compare_protocols(model, processor, split: Split, settings: EvaluationSettings,
                      journal: Journal | None = None) -> tuple[dict, list[dict]]:
    """({set: {modality: {n, agreement, fast_acc, official_acc, official_unparsed}}}, disagreements).
    ``journal``: resume an interrupted comparison."""
    questions = [q for q in questions_of(split) if q.item.task is Task.MCQ]
    fast = [predicted_letter(o) for o in fast_outputs(model, processor, questions, settings, journal)]
    replies = official_raw_replies(model, processor, questions, split, settings, journal)
    cells: dict[tuple[str, str], list[tuple[bool, bool, bool, bool]]] = defaultdict(list)
    disagreements = []
    for question, fast_letter, reply in zip(questions, fast, replies):
        official_letter = first_letter(reply)
        fast_right, official_right = fast_letter == question.item.correct, official_letter == question.item.correct
        cells[(question.set_name, str(question.item.modality))].append(
            (fast_right == official_right, fast_right, official_right, official_letter is None))
        if fast_right != official_right:
            disagreements.append({"set": question.set_name, "profile_id": question.profile.id,
                                  "modality": str(question.item.modality), "question": question.item.question,
                                  "truth": question.item.correct, "fast": fast_letter, "official": official_letter,
                                  "official_reply": reply[:80]})
    summary: dict = {}
    for (set_name, modality), rows in sorted(cells.items()):
        n = len(rows)
        summary.setdefault(set_name, {})[modality] = {
            "n": n, "agreement": sum(r[0] for r in rows) / n, "fast_acc": sum(r[1] for r in rows) / n,
            "official_acc": sum(r[2] for r in rows) / n, "official_unparsed": sum(r[3] for r in rows)}
    total = sum(len(rows) for rows in cells.values())
    summary["overall"] = {"n": total, "agreement": sum(r[0] for rows in cells.values() for r in rows) / total}
    return summary, disagreements


def agreement_markdown(model_name: str, summary: dict, disagreements: list[dict]) -> str:
    lines = [f"# Multiple choice: `fast` vs `official` protocol on {model_name}", "",
             f"Correctness agrees on {summary['overall']['agreement']:.1%} of {summary['overall']['n']} questions "
             "(both right or both wrong).", "",
             "| set | modality | questions | agreement | fast accuracy | official accuracy | official replies without a letter |",
             "|---|---|---|---|---|---|---|"]
    for set_name, cells in summary.items():
        if set_name == "overall":
            continue
        for modality, c in cells.items():
            lines.append(f"| {set_name} | {modality} | {c['n']} | {c['agreement']:.3f} | {c['fast_acc']:.3f} | "
                         f"{c['official_acc']:.3f} | {c['official_unparsed']} |")
    lines += ["", f"## Disagreements ({len(disagreements)})", "",
              "| set | modality | profile | question | right | fast | official | official reply |",
              "|---|---|---|---|---|---|---|---|"]
    for d in disagreements:
        reply = d["official_reply"].replace("|", "/").replace("\n", " ")
        lines.append(f"| {d['set']} | {d['modality']} | {d['profile_id']} | {d['question']} | {d['truth']} | "
                     f"{d['fast']} | {d['official'] or '—'} | {reply} |")
    return "\n".join(lines) + "\n"
