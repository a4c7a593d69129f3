"""Forget / retain / test / celebrity split of a benchmark (the paper's 5, 10 or 15 % forget sets).

Forget profiles are a seeded sample of the fictitious profiles (or, for an imported release, its own
forget set of that size: the manifest's ``forget_ids``); retain is the rest; the Test set is
the forget profiles' paraphrased questions and re-posed images; celebrities are kept whole.
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path

from mmunlearn.atomic import atomic_dir, read_json
from mmunlearn.config import SplitConfig
from mmunlearn.data.schema import Benchmark, Profile, read_profiles, write_profiles
from mmunlearn.errors import DataError

log = logging.getLogger(__name__)
SPLIT_PARTS = ("forget", "retain", "test", "celebrity")
SPLIT_MANIFEST = "split.json"


@dataclass(frozen=True)
class Split:
    forget: tuple[Profile, ...]
    retain: tuple[Profile, ...]
    test: tuple[Profile, ...]
    celebrity: tuple[Profile, ...]
    manifest: dict


def _forget_ids(benchmark: Benchmark, config: SplitConfig) -> tuple[set[str], list[str] | None]:
    """The forget set's IDs, and the release's own list where an import has one at this percent (as the
    paper's rows use; data/mllmu.py), else a seeded draw."""
    ids = sorted(profile.id for profile in benchmark.full)
    official = benchmark.manifest.get("forget_ids", {}).get(str(config.forget_percent))
    if official is not None:
        forget_ids = set(official)
        unknown = sorted(forget_ids - set(ids))
        problem = (f"names profiles not in the benchmark: {unknown[:5]}" if unknown else "is empty" if not forget_ids
                   else "leaves no retain profiles" if len(forget_ids) >= len(ids) else None)
        if problem:
            raise DataError(f"benchmark manifest: forget_ids[\"{config.forget_percent}\"] {problem}")
        return forget_ids, official
    released = sorted(benchmark.manifest.get("forget_ids", {}), key=int)
    if released:  # an import's results then compare with no published row
        log.warning("split.forget_percent %s: the imported release has forget sets for %s%% only; drawing a seeded "
                    "forget set instead (not the release's)", config.forget_percent, "/".join(released))
    forget_count = max(1, round(len(ids) * config.forget_percent / 100))
    if forget_count >= len(ids):
        raise DataError(f"forget_percent {config.forget_percent} leaves no retain profiles among {len(ids)}")
    return set(random.Random(config.seed).sample(ids, forget_count)), None


def make_split(benchmark: Benchmark, config: SplitConfig) -> Split:
    forget_ids, official = _forget_ids(benchmark, config)
    forget = tuple(p for p in benchmark.full if p.id in forget_ids)
    retain = tuple(p for p in benchmark.full if p.id not in forget_ids)
    test = tuple(p for p in benchmark.test if p.id in forget_ids)
    missing = forget_ids - {p.id for p in test}
    if missing:
        raise DataError(f"test set has no rows for forget profiles {sorted(missing)[:5]}")
    unposed = [row for row in test if config.test_image_difficulty not in {pose.difficulty for pose in row.poses}]
    if unposed:  # real data may lack a rung here and there; evaluation shows those rows the training face
        log.warning("split.test_image_difficulty %r: no such re-posed face in %d Test-set rows (e.g. %s, which has %s): "
                    "they are asked with the training face", config.test_image_difficulty, len(unposed), unposed[0].id,
                    [pose.difficulty for pose in unposed[0].poses])
    manifest = {
        "forget_percent": config.forget_percent,
        "seed": config.seed,
        "test_image_difficulty": config.test_image_difficulty,
        "forget_ids": sorted(forget_ids),
        **({"forget_set": f"the release's forget_{config.forget_percent}"} if official is not None else {}),
        **({"test_rows_shown_the_training_face": [row.id for row in unposed]} if unposed else {}),
        "counts": {"forget": len(forget), "retain": len(retain), "test": len(test),
                   "celebrity": len(benchmark.celebrity)},
    }
    return Split(forget, retain, test, benchmark.celebrity, manifest)


def save_split(split: Split, folder: Path) -> None:
    with atomic_dir(folder, marks=(SPLIT_MANIFEST,)) as staging:
        for part in SPLIT_PARTS:
            write_profiles(staging / f"{part}.parquet", getattr(split, part))
        (staging / SPLIT_MANIFEST).write_text(json.dumps(split.manifest, indent=2, sort_keys=True) + "\n",
                                              encoding="utf-8")


def load_split(folder: Path) -> Split:
    folder = Path(folder)
    manifest_path = folder / SPLIT_MANIFEST
    if not manifest_path.is_file():
        raise DataError(f"{manifest_path}: split manifest not found (run `mmunlearn split`)")
    parts = {part: read_profiles(folder / f"{part}.parquet") for part in SPLIT_PARTS}
    return Split(manifest=read_json(manifest_path), **parts)
