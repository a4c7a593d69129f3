"""What a reader needs beside the report's numbers: which model, data and protocol made them, how many
questions each cell averages, and what an attack row can and cannot show. Written from params and the
metrics folder, so the notes change with the study, never by hand."""

from __future__ import annotations

from collections.abc import Mapping

from mmunlearn.config import Params
from mmunlearn.evaluation.run import EVALUATED_SETS
from mmunlearn.models.base import TINY

COUNTED = (("n_mcq_acc", "multiple-choice"), ("n_rouge_l", "generated"), ("n_cloze_acc", "fill-in-the-blank"))


def _bullets(lines: list[str]) -> str:
    return "".join(f"- {line}\n" for line in lines) + "\n"


def _model_line(params: Params) -> str:
    name = params.model.name
    if name == TINY:
        return (f"`model.name: {TINY}`, the embedded default: a tiny LLaVA-architecture model "
                f"({params.model.tiny.text_layers} text layers of width {params.model.tiny.text_hidden}) built and "
                "pretrained offline — not the paper's LLaVA-1.5-7B or Idefics2, so compare trends, not values")
    return f"`model.name: {name}`"


def _cell_sizes(results: Mapping[tuple[str, str], Mapping]) -> str:
    """Questions per cell, read off the vanilla's (else the first model's) counts, per set and modality."""
    source = results.get(("Vanilla", "—")) or next(iter(results.values()), {})
    parts = []
    for set_name in EVALUATED_SETS:
        cell = source.get(set_name, {}).get("image") or source.get(set_name, {}).get("text") or {}
        counts = [f"{int(cell[key])} {label}" for key, label in COUNTED if cell.get(key)]
        if counts:
            parts.append(f"{set_name} {' / '.join(counts)}")
    return "; ".join(parts)


def table_setting(params: Params, results: Mapping[tuple[str, str], Mapping], quality: Mapping | None,
                  agreement: Mapping | None) -> str:
    """The paragraph under the table's title."""
    lines = [f"**Model.** {_model_line(params)}."]
    if quality:
        counts = quality.get("counts", {})
        lines.append(f"**Data.** {counts.get('profiles')} fictitious profiles and {counts.get('celebrities')} public "
                     f"figures (`{params.paths.benchmark}`, `data.source: {params.data.source}`); forget set "
                     f"{params.split.forget_percent}% of the profiles; Test-set faces re-posed at "
                     f"`{params.split.test_image_difficulty}`.")
    sizes = _cell_sizes(results)
    if sizes:
        lines.append(f"**Questions per cell** (each modality): {sizes}. One run of one seed: a cell moves by "
                     "1/n per question, so differences of a question or two are noise.")
    protocol = params.evaluation.protocol
    line = (f"**Class.** `evaluation.protocol: {protocol}`" + (
        ": the best of the four option letters scored right after the question, no demonstrations"
        if protocol == "fast" else ": eval.py's few-shot prompt, a generated reply's first letter"))
    overall = (agreement or {}).get("overall")
    if overall:
        line += (f". On the vanilla model the two protocols agree on {overall['agreement']:.1%} of the "
                 f"{overall['n']} multiple-choice questions ({overall['zero_shot_agreement']:.1%} without eval.py's "
                 "few-shot prompt), per set in `reports/protocol_agreement.md`")
    lines.append(line + ".")
    return _bullets(lines)


def attack_notes(params: Params) -> str:
    """The lines under the attack matrix's title that say what its budgets and rows mean."""
    config = params.attack
    lines = [f"B≈ in a column's header is the mean over the models; each model's own budget is in `attacks.csv` "
             f"(a white-box candidate set's size differs by model). Every black-box attack draws "
             f"`attack.budget` = {config.budget} replies per fact (UnLOK-VQA: 20); any_blackbox pools them all."]
    if -1 in config.layers and config.known_generated:
        lines.append("Layer −1's lens is the model's own next-token distribution: a fact the vanilla model says "
                     "greedily is among its head-projection candidates there by construction, so the vanilla's "
                     "white-box rates on the facts it knew are 1; what the columns show is how far unlearning moved them.")
    prompt_only = [method.title or name for name, method in params.methods.items()
                   if method.forget is None and name in params.unlearn.methods + params.unlearn.defenses]
    if prompt_only:
        lines.append(f"{', '.join(prompt_only)} changes no weight (a system prompt only): its rows are the vanilla's "
                     "weights asked under that prompt, the same whatever the unlearning modality. A white-box "
                     "attacker runs the weights and can leave the prompt out, and then meets the vanilla's rates.")
    return _bullets(lines)
