"""Trade-off study pieces on hand-made inputs: fronts, operating points, objectives, search space, sampler."""

from __future__ import annotations

import optuna
import pytest

from mmunlearn.config import MethodConfig, Params, SearchDimension, TuneConfig
from mmunlearn.errors import ConfigError
from mmunlearn.tuning.front import dominates, on_front, operating_point, pareto_front
from mmunlearn.tuning.objectives import Objectives, metric_value
from mmunlearn.tuning.space import SeededStartupSampler, suggest, with_overrides
from mmunlearn.secrets import mask_url_passwords
from mmunlearn.tuning.study import open_study


def _point(trial, efficacy, utility):
    return {"trial": trial, "efficacy": efficacy, "utility": utility}


def test_front_keeps_exactly_the_non_dominated_trials_sorted_by_efficacy():
    points = [_point(0, 0.5, 0.7), _point(1, 0.3, 0.6), _point(2, 0.6, 0.65),  # 2 is dominated by 0
              _point(3, 0.3, 0.5), _point(4, 0.8, 0.9)]                        # 3 is dominated by 1
    assert [p["trial"] for p in pareto_front(points)] == [1, 0, 4]
    assert dominates((0.3, 0.6), (0.3, 0.5)) and not dominates((0.3, 0.6), (0.3, 0.6))
    assert on_front((0.1, 0.1), [(0.2, 0.9)]) and not on_front((0.25, 0.8), [(0.2, 0.9)])


def test_operating_point_is_the_most_forgetting_front_trial_within_the_utility_budget():
    front = pareto_front([_point(0, 0.2, 0.60), _point(1, 0.4, 0.76), _point(2, 0.6, 0.80)])
    assert operating_point(front, vanilla_utility=0.80, max_utility_loss=0.05)["trial"] == 1
    assert operating_point(front, vanilla_utility=0.80, max_utility_loss=0.25)["trial"] == 0
    assert operating_point(front, vanilla_utility=0.95, max_utility_loss=0.05) is None


def test_objectives_average_the_named_metrics_and_reject_bad_names():
    results = {"forget": {"text": {"rouge_l": 0.4, "mcq_acc": 0.2}}, "retain": {"image": {"mcq_acc": 0.9}}}
    objectives = Objectives.from_config(TuneConfig(efficacy=("forget.text.rouge_l", "forget.text.mcq_acc"),
                                                   utility=("retain.image.mcq_acc",)))
    assert objectives.efficacy_of(results) == pytest.approx(0.3)
    assert objectives.utility_of(results) == pytest.approx(0.9)
    assert objectives.utility_sets == {"retain"} and objectives.efficacy_sets == {"forget"}
    with pytest.raises(ValueError, match="retain.text.mcq_acc"):
        metric_value(results, "retain.text.mcq_acc")
    for bad in ("forget.text", "holdout.text.rouge_l", "forget.audio.rouge_l", "forget.text.bleu"):
        with pytest.raises(ConfigError, match=r"tune\.utility\[0\]"):
            Objectives.from_config(TuneConfig(utility=(bad,)))


def test_search_space_is_validated_like_params():
    with pytest.raises(ValueError, match="low < high"):
        SearchDimension(low=1.0, high=0.5)
    with pytest.raises(ValueError, match="log scale"):
        SearchDimension(low=0.0, high=1.0, log=True)
    with pytest.raises(ValueError, match="not method settings"):
        TuneConfig(search_space={"ga": {"learning_rate": SearchDimension(low=0.1, high=0.2)}})
    tuned = with_overrides(MethodConfig(lr=1e-3, epochs=3), {"lr": 2e-3, "epochs": 2})
    assert (tuned.lr, tuned.epochs, tuned.forget) == (2e-3, 2, "ga")


@pytest.mark.parametrize(("space", "needle"), [
    ({"epochs": {"choices": ["fast", "slow"]}}, "tune.search_space.ga.epochs: 'fast' is not a value methods.ga.epochs takes"),
    ({"lr": {"low": -0.01, "high": 0.01}}, "tune.search_space.ga.lr: -0.01 is not a value methods.ga.lr takes"),
])
def test_a_search_space_value_the_method_cannot_take_is_named_when_params_load(tmp_path, space, needle):
    """It failed the first trial with a pydantic traceback and left a failed trial in the storage."""
    import yaml

    from mmunlearn.config import load_params
    from mmunlearn.errors import ConfigError

    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"tune": {"methods": ["ga"], "search_space": {"ga": space}}}))
    with pytest.raises(ConfigError, match=f"^{path}: {needle}"):
        load_params(path)


def test_a_study_with_nothing_to_search_is_refused(tmp_path):
    """Every trial trained the one configuration there is, the budget spent on duplicates."""
    from mmunlearn.errors import ConfigError
    from mmunlearn.tuning.study import tune

    with pytest.raises(ConfigError, match=r"tune.search_space.ga: nothing to search"):
        tune(Params(tune=TuneConfig(methods=("ga",))), "ga")


def _draws(seed: int, trials: int, startup: int = 10) -> list[dict]:
    space = {"lr": SearchDimension(low=1e-4, high=1e-2, log=True), "epochs": SearchDimension(low=1, high=4, integer=True),
             "prompt": SearchDimension(choices=("a", "b", "c"))}
    study = optuna.create_study(directions=["minimize", "maximize"], sampler=SeededStartupSampler(seed, startup))
    draws = []
    for _ in range(trials):
        trial = study.ask()
        draws.append(suggest(trial, space))
        study.tell(trial, [draws[-1]["lr"], draws[-1]["epochs"]])
    return draws


def test_startup_draws_depend_on_seed_and_trial_number_only():
    first, again, other = _draws(0, 4), _draws(0, 4), _draws(1, 4)
    assert first == again  # reproducible
    assert first != other
    assert len({round(d["lr"], 12) for d in first}) == 4  # trials draw differently from each other
    assert all(1e-4 <= d["lr"] <= 1e-2 and d["epochs"] in (1, 2, 3, 4) and d["prompt"] in "abc" for d in first)
    assert len(_draws(0, 6, startup=2)) == 6  # TPE takes over after the startup draws


def test_storage_urls_are_logged_without_their_password():
    assert "s3cret" not in mask_url_passwords("postgresql://me:s3cret@db.example:5432/optuna")
    assert mask_url_passwords("sqlite:///optuna.db") == "sqlite:///optuna.db"


@pytest.mark.parametrize("storage", ["sqlite:///{folder}/optuna.db", "postgresql://me:s3cret@127.0.0.1:9/optuna"])
def test_a_storage_that_cannot_be_opened_ends_in_one_line_naming_tune_storage(tmp_path, storage):
    (tmp_path / "optuna.db").write_bytes(b"not a database, e.g. a file cut short by a full disk" * 100)
    storage = storage.format(folder=tmp_path)
    with pytest.raises(ConfigError) as raised:  # after the retries that let racing workers create the tables
        open_study(Params(tune=TuneConfig(storage=storage)), "mmunlearn-ga-test")
    message = str(raised.value)
    assert message.startswith(f"tune.storage: the storage {mask_url_passwords(storage)} cannot be opened (")
    assert message.endswith("set tune.storage to another storage") and "\n" not in message
    assert "s3cret" not in message


def test_the_interactive_front_numbers_trials_as_the_summary_does():
    """Pruned trials are not recorded: the rebuilt study numbered the recorded ones 0, 1, 2..., so the
    plot's hover said "Trial 1" for the summary's (and MLflow's) trial 2."""
    from mmunlearn.tuning.outputs import _recorded_study

    rows = [dict(_point(number, 0.1 * number, 0.9 - 0.1 * number), params={"lr": 1e-4 * (number + 1)})
            for number in (0, 2, 5)]
    study = _recorded_study(Params(), "ga", {"study": "ga-x", "all": rows})
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert [(t.number, t.values[0]) for t in complete] == [(row["trial"], row["efficacy"]) for row in rows]
    hover = " ".join(str(trace.text) for trace in
                     optuna.visualization.plot_pareto_front(study, target_names=["efficacy", "utility"]).data)
    assert '"number": 5' in hover and '"number": 4' not in hover


def test_the_summary_says_how_many_distinct_settings_a_study_tried():
    """Prompting's study read "6 / 0 / 0" trials, though its 6 draws held 2 prompts (the repeats reuse a result)."""
    from mmunlearn.tuning.outputs import _markdown

    def summary(complete: int, distinct: int) -> dict:
        points = [{"trial": n, "efficacy": 0.5, "utility": 0.8, "params": {"lr": n}} for n in range(distinct)]
        return {"objectives": {"efficacy": ["forget.text.rouge_l"], "utility": ["retain.text.rouge_l"]},
                "trials": {"complete": complete, "pruned": 0, "fail": 0}, "front": points[:1], "all": points,
                "vanilla": {"efficacy": 0.9, "utility": 0.9}}

    table = _markdown({"prompting": "Prompting", "ga": "GA"}, {"prompting": summary(6, 2), "ga": summary(5, 5)},
                      {"prompting": None, "ga": None})
    assert "| Prompting | 6 (2 distinct) / 0 / 0 |" in table and "| GA | 5 / 0 / 0 |" in table
