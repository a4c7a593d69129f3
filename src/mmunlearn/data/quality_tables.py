"""Flat tables of a benchmark for the expectation suites: one row per profile, image, QA item, link, count.

Each check an expectation needs is a plain column here (``image_decodes``, ``correct_in_options``...)
so the suites in ``expectations/`` stay declarative and every failure points back at a row.
"""

from __future__ import annotations

import io
import itertools

import pandas as pd
from PIL import Image

from mmunlearn.data.schema import BLANK, Benchmark, Modality, Profile, Task

PARTS = ("full", "celebrity", "test")


def _image_facts(png: bytes) -> dict[str, object]:
    try:
        with Image.open(io.BytesIO(png)) as image:
            image.load()
            return {"image_decodes": True, "image_mode": image.mode, "image_width": image.width,
                    "image_height": image.height}
    except Exception:  # any decoder failure is a data defect to report, not a crash
        return {"image_decodes": False, "image_mode": None, "image_width": None, "image_height": None}


def _parts(benchmark: Benchmark) -> list[tuple[str, Profile]]:
    return [(part, profile) for part in PARTS for profile in getattr(benchmark, part)]


def profiles_table(benchmark: Benchmark) -> pd.DataFrame:
    """Fictitious and celebrity profiles (the people of the benchmark; Test rows re-use their ids)."""
    rows = [{"source": part, "profile_id": p.id, "name": p.name.strip(), "kind": p.kind}
            for part, p in _parts(benchmark) if part != "test"]
    return pd.DataFrame(rows, columns=["source", "profile_id", "name", "kind"])


def images_table(benchmark: Benchmark) -> pd.DataFrame:
    rows = []
    for part, profile in _parts(benchmark):
        rows.append({"source": part, "profile_id": profile.id, "role": "portrait", **_image_facts(profile.image)})
        rows.extend({"source": part, "profile_id": profile.id, "role": f"pose-{pose.difficulty}",
                     **_image_facts(pose.png)} for pose in profile.poses)
    return pd.DataFrame(rows, columns=["source", "profile_id", "role", "image_decodes", "image_mode",
                                       "image_width", "image_height"])


def items_table(benchmark: Benchmark) -> pd.DataFrame:
    rows = []
    for part, profile in _parts(benchmark):
        for item in profile.items:
            is_mcq, is_cloze = item.task is Task.MCQ, item.task is Task.CLOZE
            options = item.options or {}
            correct_text = options.get(item.correct or "")
            rows.append({
                "source": part, "profile_id": profile.id, "task": str(item.task), "modality": str(item.modality),
                "question": item.question.strip(), "ground_truth": item.ground_truth.strip(),
                # multiple-choice checks (null for the other tasks, which the expectations skip)
                "option_count": len(options) if is_mcq else None,
                "option_letters": "".join(sorted(options)) if is_mcq else None,
                "correct_in_options": (correct_text is not None) if is_mcq else None,
                "correct_option_distinct": (correct_text is not None and list(options.values()).count(correct_text) == 1
                                            and all(v.strip() for v in options.values())) if is_mcq else None,
                # fill-in-the-blank checks
                "has_blank": (BLANK in item.question) if is_cloze else None,
                "cloze_answer": item.ground_truth.strip() if is_cloze else None,
            })
    columns = ["source", "profile_id", "task", "modality", "question", "ground_truth", "option_count",
               "option_letters", "correct_in_options", "correct_option_distinct", "has_blank", "cloze_answer"]
    return pd.DataFrame(rows, columns=columns).astype({"option_count": "Int64"})


def test_links_table(benchmark: Benchmark) -> pd.DataFrame:
    rows = [{"profile_id": p.id, "items": len(p.items), "poses": len(p.poses)} for p in benchmark.test]
    return pd.DataFrame(rows, columns=["profile_id", "items", "poses"])


def counts_table(benchmark: Benchmark) -> pd.DataFrame:
    """Questions per profile × task × modality, beside the count the manifest declares (0 rows included)."""
    declared = benchmark.manifest.get("questions_per_modality", {})
    rows = []
    for part, profile in _parts(benchmark):
        for task, modality in itertools.product(Task, Modality):
            rows.append({"source": part, "profile_id": profile.id, "task": str(task), "modality": str(modality),
                         "count": len(profile.items_of(task, modality)),
                         "expected": declared.get(str(task), len(profile.items_of(task, modality)))})
    return pd.DataFrame(rows, columns=["source", "profile_id", "task", "modality", "count", "expected"])


TABLES = {
    "profiles": profiles_table,
    "images": images_table,
    "items": items_table,
    "test_links": test_links_table,
    "counts": counts_table,
}


def suite_parameters(benchmark: Benchmark) -> dict[str, object]:
    """Values the suites refer to as ``{"$PARAMETER": name}``."""
    return {
        "image_size": benchmark.manifest.get("image_size"),
        "fictitious_ids": [p.id for p in benchmark.full],
        "tasks": [str(t) for t in Task],
        "modalities": [str(m) for m in Modality],
        "pose_difficulties": benchmark.manifest.get("test_pose_difficulties", ["easy", "medium", "hard"]),
    }
