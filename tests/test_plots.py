"""Trade-off plots: readable PNGs (labels, legend, a point per model) and the CSVs `dvc plots` reads."""

from __future__ import annotations

import csv

from PIL import Image

from mmunlearn.plots import _figure, write_tradeoff_plots


def _results(forget: float, retain: float, celebrity: float) -> dict:
    def cell(value):
        return {"mcq_acc": value, "rouge_l": value / 2, "cloze_acc": value}

    return {"forget": {"image": cell(forget), "text": cell(forget - 0.1)},
            "retain": {"image": cell(retain), "text": cell(retain)},
            "celebrity": {"image": cell(celebrity), "text": cell(celebrity)}}


RESULTS = {("Vanilla", "—"): _results(0.9, 0.9, 0.8), ("GA", "image+text"): _results(0.3, 0.5, 0.6),
           ("GA", "text"): _results(0.4, 0.6, 0.7), ("NPO", "text"): _results(0.5, 0.85, 0.8),
           ("RMU", "text"): {}}  # a model without results is left out, not drawn at 0


def test_pngs_and_csvs_hold_every_model(tmp_path):
    written = write_tradeoff_plots(RESULTS, tmp_path)
    assert sorted(p.name for p in written) == ["tradeoff_image.csv", "tradeoff_mcq_acc.png",
                                               "tradeoff_rouge_l.png", "tradeoff_text.csv"]
    for png in ("tradeoff_mcq_acc.png", "tradeoff_rouge_l.png"):
        with Image.open(tmp_path / png) as image:
            assert image.format == "PNG" and image.width >= 1000 and image.height >= 800
    rows = list(csv.DictReader((tmp_path / "tradeoff_text.csv").open()))
    assert [(r["model"], r["unlearned_on"]) for r in rows] == list(RESULTS)
    npo = rows[3]
    assert (float(npo["forget_mcq_acc"]), float(npo["retain_mcq_acc"]), float(npo["celebrity_rouge_l"])) == \
        (0.4, 0.85, 0.4)
    assert rows[4]["forget_mcq_acc"] == ""


def test_each_panel_is_labelled_and_plots_one_point_per_model_with_results():
    figure = _figure(RESULTS, "mcq_acc")
    panels = figure.get_axes()
    assert len(panels) == 4
    for ax in panels:
        assert "forget-set classification accuracy" in ax.get_xlabel()
        assert ax.get_ylabel().split("-set")[0] in ("retain", "celebrity") and ax.get_title()
        points = [tuple(c.get_offsets()[0]) for c in ax.collections]
        assert len(points) == 4  # RMU has no results
    image_retain = {tuple(map(float, p)) for p in (tuple(c.get_offsets()[0]) for c in panels[0].collections)}
    assert (0.9, 0.9) in image_retain and (0.3, 0.5) in image_retain
    legend = [t.get_text() for t in figure.legends[0].get_texts()]
    assert {"Vanilla", "GA", "NPO", "RMU", "unlearned on text", "vanilla (before)"} <= set(legend)
