"""What a trade-off study leaves behind: ``metrics/<method>.json`` (every trial, the front, the operating
point) and a front plot per method; ``mmunlearn tune-report`` adds the overlay of every method's front,
Optuna's interactive HTML plots and the operating points in params.yaml form."""

from __future__ import annotations

import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import optuna  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

from mmunlearn.atomic import atomic_file, read_json, write_json, write_text  # noqa: E402
from mmunlearn.config import Params  # noqa: E402
from mmunlearn.errors import DataError  # noqa: E402
from mmunlearn.secrets import mask_url_passwords  # noqa: E402
from mmunlearn.tuning.front import operating_point, pareto_front  # noqa: E402

log = logging.getLogger(__name__)
EFFICACY_LABEL = "forget efficacy (lower = more forgotten)"
UTILITY_LABEL = "utility (higher = more kept)"


def summary_path(params: Params, method: str) -> Path:
    return params.paths.tradeoff / "metrics" / f"{method}.json"


def front_plot_path(params: Params, method: str) -> Path:
    return params.paths.tradeoff / "plots" / f"{method}_front.png"


def study_summary(params: Params, method: str, study: optuna.Study, vanilla: dict, budget: int) -> dict:
    from mmunlearn.tuning.study import counts

    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if "duplicate_of" not in t.user_attrs]
    points = [{"trial": t.number, "efficacy": t.values[0], "utility": t.values[1], "params": t.params} for t in done]
    front = pareto_front(points)
    chosen = operating_point(front, vanilla["utility"], params.tune.max_utility_loss)
    return {
        "method": method, "study": study.study_name, "storage": mask_url_passwords(params.tune.storage),
        "objectives": {"efficacy": list(params.tune.efficacy), "utility": list(params.tune.utility),
                       "directions": ["minimize", "maximize"]},
        "budget": budget, "trials": counts(study), "vanilla": vanilla,
        "front": front, "all": sorted(points, key=lambda p: p["trial"]),
        "operating_point": chosen,
        "operating_rule": f"lowest efficacy on the front with utility >= vanilla - {params.tune.max_utility_loss}",
    }


def write_study_outputs(params: Params, method: str, study: optuna.Study, vanilla: dict, budget: int) -> dict:
    summary = study_summary(params, method, study, vanilla, budget)
    write_json(summary_path(params, method), summary)
    title = params.methods[method].title or method

    def draw(ax):
        _plot_front(ax, summary, title)
        _plot_vanilla(ax, vanilla)

    _write_png(front_plot_path(params, method), draw,
               f"{title}: efficacy / utility trade-off ({summary['trials']['complete']} complete trials)")
    return summary


def _plot_front(ax, summary: dict, label: str, color: str | None = None, everything: bool = True) -> None:
    if everything and summary["all"]:
        ax.scatter([p["efficacy"] for p in summary["all"]], [p["utility"] for p in summary["all"]],
                   color="0.7", s=25, label=f"{label}: all trials")
    front = summary["front"]
    if front:
        ax.plot([p["efficacy"] for p in front], [p["utility"] for p in front], "o-", color=color,
                drawstyle="steps-post", label=f"{label}: Pareto front")
    chosen = summary.get("operating_point")
    if chosen:
        ax.scatter([chosen["efficacy"]], [chosen["utility"]], s=160, facecolors="none", edgecolors="black",
                   linewidths=1.5, label=f"{label}: operating point" if everything else None)


def _plot_vanilla(ax, vanilla: dict) -> None:
    ax.scatter([vanilla["efficacy"]], [vanilla["utility"]], marker="*", s=220, color="gold", edgecolors="black",
               label="vanilla (before unlearning)", zorder=5)


def _write_png(path: Path, draw, title: str) -> None:
    fig, ax = plt.subplots(figsize=(7, 5), dpi=110)
    draw(ax)
    ax.set_xlabel(EFFICACY_LABEL)
    ax.set_ylabel(UTILITY_LABEL)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png", metadata={"Software": None})  # no version stamp: stable bytes
    plt.close(fig)


def load_summaries(params: Params) -> dict[str, dict]:
    summaries = {}
    for method in params.tune.methods:
        path = summary_path(params, method)
        if not path.is_file():
            raise DataError(f"{path}: not found (run `mmunlearn tune --method {method}`)")
        summaries[method] = read_json(path)
    return summaries


def tune_report(params: Params) -> Path:
    """Overlay of every method's front, Optuna's HTML front per study, operating points (JSON + markdown)."""
    summaries = load_summaries(params)
    folder = params.paths.tradeoff
    titles = {m: params.methods[m].title or m for m in summaries}
    colors = plt.get_cmap("tab10")

    def draw(ax):
        for index, (method, summary) in enumerate(summaries.items()):
            _plot_front(ax, summary, titles[method], colors(index % 10), everything=False)
        _plot_vanilla(ax, next(iter(summaries.values()))["vanilla"])

    _write_png(folder / "plots" / "overlay.png", draw, "Pareto fronts of every method (one study each)")
    _write_html(params, summaries, folder / "html")
    points = {m: _operating_entry(params, m, s) for m, s in summaries.items()}
    write_json(folder / "operating_points.json", points)
    write_text(folder / "summary.md", _markdown(titles, summaries, points))
    return folder / "summary.md"


def _operating_entry(params: Params, method: str, summary: dict) -> dict | None:
    chosen = summary.get("operating_point")
    if not chosen:
        return None
    return {"trial": chosen["trial"], "efficacy": chosen["efficacy"], "utility": chosen["utility"],
            "params_yaml": {f"methods.{method}.{k}": v for k, v in sorted(chosen["params"].items())}}


def _write_html(params: Params, summaries: dict[str, dict], folder: Path) -> None:
    """Optuna's own Pareto-front plot per study, one shared plotly.js beside them (viewable offline)."""
    folder.mkdir(parents=True, exist_ok=True)
    for method, summary in summaries.items():
        figure = optuna.visualization.plot_pareto_front(_recorded_study(params, method, summary),
                                                        target_names=["efficacy", "utility"])
        figure.update_layout(title=f"{method}: {summary['study']}")
        with atomic_file(folder / f"{method}.html") as tmp:
            # a fixed div id: plotly draws a random one, and the same study gave other bytes (and hash) every run
            figure.write_html(str(tmp), include_plotlyjs="directory", full_html=True,  # + plotly.min.js once
                              div_id=f"pareto-front-{method}")


def _recorded_study(params: Params, method: str, summary: dict) -> optuna.Study:
    """An in-memory study of the finished trials ``summary`` records. The plot was drawn from the Optuna
    storage, which a fresh clone lacks: there the stage opened empty studies and wrote empty plots."""
    from mmunlearn.tuning.space import distribution
    from mmunlearn.tuning.study import DIRECTIONS

    space = params.tune.search_space.get(method, {})
    rows = summary["all"]
    names = dict.fromkeys(name for row in rows for name in row["params"])
    distributions = {name: _spanning([row["params"][name] for row in rows if name in row["params"]],
                                     distribution(space[name]) if name in space else None) for name in names}
    study = optuna.create_study(study_name=summary["study"], directions=list(DIRECTIONS))
    by_number = {row["trial"]: row for row in rows}
    # Trials not recorded (pruned, failed, duplicates) stand in as failed ones: the in-memory study numbers
    # trials 0, 1, ... as added, and the plot's "Trial N" must be the number the summary and MLflow show.
    for number in range(max(by_number, default=-1) + 1):
        row = by_number.get(number)
        study.add_trial(optuna.trial.create_trial(state=TrialState.FAIL) if row is None else optuna.trial.create_trial(
            values=[row["efficacy"], row["utility"]], params=row["params"],
            distributions={name: distributions[name] for name in row["params"]}))
    return study


def _spanning(values: list, current: optuna.distributions.BaseDistribution | None):
    """``current`` (the search space's distribution) when it holds every recorded value, else one spanning
    them: a space edited after its trials ran (bounds narrowed, a setting dropped) made tune-report fail
    on a value 'not contained in the distribution' or a KeyError."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if isinstance(current, CategoricalDistribution) and all(value in current.choices for value in values):
        return current
    if isinstance(current, (FloatDistribution, IntDistribution)) \
            and all(isinstance(value, (int, float)) and current.low <= value <= current.high for value in values):
        return current
    if all(isinstance(value, int) and not isinstance(value, bool) for value in values):
        return IntDistribution(min(values), max(values))
    if all(isinstance(value, (int, float)) and not isinstance(value, bool) for value in values):
        return FloatDistribution(min(values), max(values))
    return CategoricalDistribution(list(dict.fromkeys(values)))


def _markdown(titles: dict, summaries: dict, points: dict) -> str:
    lines = ["# Trade-off studies (Optuna, multi-objective)", "",
             "Efficacy (minimised) = mean of " + ", ".join(f"`{n}`" for n in next(iter(summaries.values()))["objectives"]["efficacy"])
             + "; utility (maximised) = mean of "
             + ", ".join(f"`{n}`" for n in next(iter(summaries.values()))["objectives"]["utility"]) + ".", "",
             "| Method | Trials (complete / pruned / failed) | Front size | Vanilla (eff. / util.) | Operating point (eff. / util.) | Settings |",
             "|---|---|---|---|---|---|"]
    for method, summary in summaries.items():
        t, v = summary["trials"], summary["vanilla"]
        point = points[method]
        chosen = (f"{point['efficacy']:.3f} / {point['utility']:.3f} (trial {point['trial']})" if point
                  else "none within the utility budget")
        settings = ", ".join(f"`{k.split('.')[-1]}={_short(v_)}`" for k, v_ in point["params_yaml"].items()) if point else ""
        # a trial that drew a finished one's settings reuses its result: say how many settings were really tried
        distinct = f" ({len(summary['all'])} distinct)" if len(summary["all"]) < t["complete"] else ""
        lines.append(f"| {titles[method]} | {t['complete']}{distinct} / {t['pruned']} / {t['fail']} | {len(summary['front'])} | "
                     f"{v['efficacy']:.3f} / {v['utility']:.3f} | {chosen} | {settings} |")
    lines += ["", "Plots: `plots/overlay.png`, `plots/<method>_front.png`; interactive: `html/<method>.html`.", ""]
    return "\n".join(lines)


def _short(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    text = str(value)
    return text if len(text) < 40 else text[:37] + "..."
