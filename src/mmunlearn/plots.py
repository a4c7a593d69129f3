"""Trade-off plots: what each model forgot against what it kept, per evaluation modality.

For each metric (classification accuracy, ROUGE-L) one PNG with four panels — forget vs retain and
forget vs celebrity, image+text and text-only evaluation — a point per model (colour: method, marker:
unlearning modality, star: the vanilla model). The same numbers go to one CSV per evaluation modality,
which dvc.yaml's top-level ``plots:`` turns into `dvc plots show` scatter plots.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from mmunlearn.atomic import atomic_file, write_text

PLOTTED_METRICS = {"mcq_acc": "classification accuracy", "rouge_l": "ROUGE-L"}
PLOTTED_SETS = ("forget", "retain", "celebrity")
MODALITIES = {"image": "evaluated on image + text", "text": "evaluated on text only"}
MARKERS = {"—": "*", "image+text": "o", "text": "s"}


def tradeoff_rows(results_by_model: Mapping[tuple[str, str], Mapping], modality: str) -> list[dict]:
    rows = []
    for (title, unlearned_on), results in results_by_model.items():
        row = {"model": title, "unlearned_on": unlearned_on}
        for metric in PLOTTED_METRICS:
            for set_name in PLOTTED_SETS:
                value = results.get(set_name, {}).get(modality, {}).get(metric)
                row[f"{set_name}_{metric}"] = "" if value is None else round(float(value), 6)
        rows.append(row)
    return rows


def _csv(rows: list[dict]) -> str:
    header = list(rows[0]) if rows else ["model", "unlearned_on"]
    return "\n".join([",".join(header)] + [",".join(str(row[k]) for k in header) for row in rows]) + "\n"


def _figure(results_by_model: Mapping[tuple[str, str], Mapping], metric: str):
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on a server or in CI
    import matplotlib.pyplot as plt

    label = PLOTTED_METRICS[metric]
    titles = sorted({title for title, _ in results_by_model})
    # 20 distinct colours (tab10 repeated from the 11th method on: NPO and EmptyResponse shared one)
    colours = {title: plt.get_cmap("tab20")(i % 20) for i, title in enumerate(titles)}
    figure, axes = plt.subplots(2, 2, figsize=(11, 9), squeeze=False)
    for column, (modality, modality_title) in enumerate(MODALITIES.items()):
        rows = tradeoff_rows(results_by_model, modality)
        for row_index, kept in enumerate(("retain", "celebrity")):
            ax = axes[row_index][column]
            for row in rows:
                x, y = row[f"forget_{metric}"], row[f"{kept}_{metric}"]
                if x == "" or y == "":
                    continue
                vanilla = row["unlearned_on"] == "—"
                ax.scatter(x, y, s=220 if vanilla else 60, alpha=0.85, zorder=3 if vanilla else 2,
                           color=colours[row["model"]], marker=MARKERS.get(row["unlearned_on"], "o"),
                           edgecolors="black", linewidths=0.5)
            ax.set_xlabel(f"forget-set {label} (lower = more forgotten)")
            ax.set_ylabel(f"{kept}-set {label} (higher = more kept)")
            ax.set_title(f"forget vs {kept}, {modality_title}", fontsize=10)
            ax.grid(alpha=0.3)
    handles = [plt.Line2D([], [], linestyle="", marker="o", color=colours[t], label=t) for t in titles]
    handles += [plt.Line2D([], [], linestyle="", marker=m, color="grey", label=f"unlearned on {on}" if on != "—" else "vanilla (before)")
                for on, m in MARKERS.items()]
    figure.legend(handles=handles, loc="center right", frameon=False)
    figure.suptitle(f"Efficacy vs utility: {label}", fontsize=13)
    figure.tight_layout(rect=(0, 0, 0.82, 0.97))
    return figure


def write_tradeoff_plots(results_by_model: Mapping[tuple[str, str], Mapping], folder: Path) -> list[Path]:
    """PNG per metric and CSV per evaluation modality under ``folder``; returns the written paths."""
    import matplotlib.pyplot as plt

    written = []
    for modality in MODALITIES:
        path = folder / f"tradeoff_{modality}.csv"
        write_text(path, _csv(tradeoff_rows(results_by_model, modality)))
        written.append(path)
    for metric in PLOTTED_METRICS:
        figure = _figure(results_by_model, metric)
        path = folder / f"tradeoff_{metric}.png"
        with atomic_file(path) as tmp:
            figure.savefig(tmp, format="png", dpi=110)
        plt.close(figure)
        written.append(path)
    return written
