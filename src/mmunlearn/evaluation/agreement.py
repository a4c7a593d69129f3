"""Do our `fast` protocol and the official one read the same multiple-choice answers off a model?

Both protocols answer every multiple-choice question of the split; a question agrees when both
protocols are right or both are wrong (the issue's bar: ≥ 90 % on the vanilla model). The official
protocol also answers with its few-shot prompt left out: where that reading agrees with `fast` and the
prompted one does not, the protocols differ over the few-shot prompt, not over what the model knows.
Written as ``metrics/protocol_agreement.json`` and ``reports/protocol_agreement.md`` with every
disagreement.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace

from mmunlearn.data.schema import Task
from mmunlearn.data.splits import Split
from mmunlearn.evaluation.metrics import predicted_letter
from mmunlearn.evaluation.official import first_letter
from mmunlearn.evaluation.run import (
    EvaluationSettings,
    demonstrators_of,
    fast_outputs,
    official_raw_replies,
    questions_of,
)
from mmunlearn.journal import Journal


def compare_protocols(model, processor, split: Split, settings: EvaluationSettings,
                      journal: Journal | None = None) -> tuple[dict, list[dict]]:
    """({set: {modality: {n, agreement, fast_acc, official_acc, official_unparsed, zero_shot_agreement,
    official_zero_shot_acc}}}, disagreements). ``journal``: resume an interrupted comparison."""
    questions = [q for q in questions_of(split) if q.item.task is Task.MCQ]
    fast = [predicted_letter(o) for o in fast_outputs(model, processor, questions, settings, journal)]
    replies = official_raw_replies(model, processor, questions, split, settings, journal)
    demonstrators = demonstrators_of(split, settings)
    prompted = [i for i, q in enumerate(questions) if demonstrators.for_question(q.set_name, q.profile.id, q.item)]
    bare = list(replies)  # a question asked zero-shot already has its reply without a few-shot prompt
    unprompted = official_raw_replies(model, processor, [questions[i] for i in prompted], split,
                                      replace(settings, demo_people=0), journal,
                                      scope="official without few-shot prompt")
    for index, reply in zip(prompted, unprompted):
        bare[index] = reply
    cells: dict[tuple[str, str], list[dict[str, bool]]] = defaultdict(list)
    disagreements = []
    for question, fast_letter, reply, bare_reply in zip(questions, fast, replies, bare):
        right = question.item.correct
        official_letter, bare_letter = first_letter(reply), first_letter(bare_reply)
        fast_right, official_right, bare_right = fast_letter == right, official_letter == right, bare_letter == right
        cells[(question.set_name, str(question.item.modality))].append(
            {"agreement": fast_right == official_right, "fast_acc": fast_right, "official_acc": official_right,
             "official_unparsed": official_letter is None, "zero_shot_agreement": fast_right == bare_right,
             "official_zero_shot_acc": bare_right})
        if fast_right != official_right:
            disagreements.append({"set": question.set_name, "profile_id": question.profile.id,
                                  "modality": str(question.item.modality), "question": question.item.question,
                                  "truth": right, "fast": fast_letter, "official": official_letter,
                                  "official_zero_shot": bare_letter, "official_reply": reply[:80]})
    summary: dict = {}
    for (set_name, modality), rows in sorted(cells.items()):
        n = len(rows)
        cell: dict = {"n": n, **{key: sum(row[key] for row in rows) / n for key in rows[0]}}
        cell["official_unparsed"] = sum(row["official_unparsed"] for row in rows)
        summary.setdefault(set_name, {})[modality] = cell
    every = [row for rows in cells.values() for row in rows]
    summary["overall"] = {"n": len(every), "agreement": sum(r["agreement"] for r in every) / len(every),
                          "zero_shot_agreement": sum(r["zero_shot_agreement"] for r in every) / len(every)}
    return summary, disagreements


def agreement_markdown(model_name: str, summary: dict, disagreements: list[dict]) -> str:
    lines = [f"# Multiple choice: `fast` vs `official` protocol on {model_name}", "",
             f"Correctness agrees on {summary['overall']['agreement']:.1%} of {summary['overall']['n']} questions "
             "(both right or both wrong); with the official protocol's few-shot prompt left out, on "
             f"{summary['overall']['zero_shot_agreement']:.1%}.", "",
             "| set | modality | questions | agreement | fast accuracy | official accuracy "
             "| official replies without a letter | official accuracy, no few-shot | agreement, no few-shot |",
             "|---|---|---|---|---|---|---|---|---|"]
    for set_name, cells in summary.items():
        if set_name == "overall":
            continue
        for modality, c in cells.items():
            lines.append(f"| {set_name} | {modality} | {c['n']} | {c['agreement']:.3f} | {c['fast_acc']:.3f} | "
                         f"{c['official_acc']:.3f} | {c['official_unparsed']} | {c['official_zero_shot_acc']:.3f} | "
                         f"{c['zero_shot_agreement']:.3f} |")
    lines += ["", f"## Disagreements ({len(disagreements)})", "",
              "| set | modality | profile | question | right | fast | official | official, no few-shot "
              "| official reply |",
              "|---|---|---|---|---|---|---|---|---|"]
    for d in disagreements:
        reply = d["official_reply"].replace("|", "/").replace("\n", " ")
        lines.append(f"| {d['set']} | {d['modality']} | {d['profile_id']} | {d['question']} | {d['truth']} | "
                     f"{d['fast']} | {d['official'] or '—'} | {d['official_zero_shot'] or '—'} | {reply} |")
    return "\n".join(lines) + "\n"
