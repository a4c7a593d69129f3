"""Import a local copy of the released MLLMU-Bench (Liu et al.; the Hugging Face dataset MLLMMU/MLLMU-Bench).

The release is folders of parquet files (shared/research/mllmu_bench.md), read here as they are:

- ``Full_Set/``: the fictitious profiles — ``ID``, ``image``, ``Classification_Task``,
  ``Generation_Task``, ``Mask_Task`` (our reader reads these columns: data/schema.py);
- ``ft_Data/``: the fine-tuning pairs — ``image`` + ``metadata`` (a JSON list of {Question, Answer}),
  every pair asked with the face as finetune.py asks it;
- ``Test_Set/``: each profile's paraphrased questions, ``images`` = its re-posed faces;
- ``Retain_Set/``: the real celebrities (eval.py's ``--celebrity_data``);
- ``forget_5/``, ``forget_10/``, ``forget_15/``: the official forget sets, read for their ``ID``\\ s.

What the release leaves open is settled so:

- ft_Data rows join their profile by ``ID`` when the file has one, else by the face's bytes (the same
  picture as the Full_Set row's); a row that joins no profile is an error;
- re-posed faces carry no difficulty: they are named ``pose1``, ``pose2``, ... after the ``_poseX_``
  in their file names (``{ID}_poseX_gen1.png``), else by their order — the names to give
  ``data.test_pose_difficulties`` and ``split.test_image_difficulty``;
- the official forget sets go into the manifest (``forget_ids``) and ``mmunlearn split`` takes the one
  of ``split.forget_percent`` instead of its seeded draw, so results compare with the paper's;
- the release names no one in a column, states no biography and marks no fact inside an answer: the ID
  stands in for the name; letter drills, attack targets and the fact-level defenses, which need a
  pair's short fact, find none (set ``finetune.formats: [generation]``).
"""

from __future__ import annotations

import logging
import re
from dataclasses import replace
from pathlib import Path

from mmunlearn.data.schema import Benchmark, PoseImage, Profile, profile_from_row, read_rows, require_unique_ids
from mmunlearn.errors import DataError

log = logging.getLogger(__name__)

FULL_SET, FINETUNE_DATA, TEST_SET, CELEBRITY_SET = "Full_Set", "ft_Data", "Test_Set", "Retain_Set"
FORGET_PERCENTS = (5, 10, 15)
_POSE_NUMBER = re.compile(r"_pose(\d+)")


def _parquet_files(release: Path, folder: str, required: bool = True) -> list[Path]:
    files = sorted((release / folder).glob("*.parquet")) if (release / folder).is_dir() else []
    if required and not files:
        raise DataError(f"{release / folder}: no parquet files (the release's {folder}/ folder)")
    return files


def _rows(files: list[Path]) -> list[tuple[str, list[str], dict]]:
    """(where, the file's columns, row) of every row of ``files``, in file and row order."""
    return [(f"{path} row {index}", columns, row)
            for path in files for columns, rows in [read_rows(path)] for index, row in enumerate(rows)]


def _profiles(files: list[Path], kind: str, id_prefix: str = "") -> list[Profile]:
    """Profiles from release rows; a row without ``ID`` (e.g. a celebrity file that has none) is numbered."""
    profiles = []
    for number, (where, columns, row) in enumerate(_rows(files)):
        if row.get("ID") in (None, ""):
            if "ID" in columns:
                raise DataError(f"{where}: empty ID")
            row = {**row, "ID": f"{id_prefix}{number:04d}"}
        profile = profile_from_row(row, f"{where} (ID {row['ID']!r})")
        profiles.append(replace(profile, kind=kind, name=profile.name or profile.id))
    require_unique_ids(profiles, files[0].parent)
    return profiles


def _with_finetune_pairs(full: list[Profile], files: list[Path]) -> list[Profile]:
    """Full_Set profiles with their ft_Data pairs, joined by ID or else by the face's bytes."""
    ids = {p.id for p in full}
    by_image = {p.image: p.id for p in full}
    pairs: dict[str, list] = {}
    for where, columns, row in _rows(files):
        if "ID" in columns:
            owner = str(row.get("ID"))
        else:
            owner = by_image.get((row.get("image") or {}).get("bytes") or b"")
        if owner not in ids:
            raise DataError(f"{where}: joins no Full_Set profile "
                            f"({'ID ' + repr(owner) if 'ID' in columns else 'its image is no profile face'})")
        pairs.setdefault(owner, []).extend(profile_from_row({**row, "ID": owner}, where).finetune_pairs)
    missing = [p.id for p in full if not p.finetune_pairs and p.id not in pairs]
    if missing:
        log.warning("MLLMU-Bench: %d profiles have no fine-tuning pairs (e.g. %s)", len(missing), missing[:3])
    return [replace(p, finetune_pairs=p.finetune_pairs + tuple(pairs.get(p.id, ()))) for p in full]


def _named_poses(row: Profile, paths: list[str | None]) -> Profile:
    names = []
    for order, path in enumerate(paths, start=1):
        found = _POSE_NUMBER.search(path or "")
        names.append(f"pose{found.group(1) if found else order}")
    if len(set(names)) != len(names):  # file names that do not tell the poses apart
        names = [f"pose{order}" for order in range(1, len(paths) + 1)]
    return replace(row, poses=tuple(PoseImage(name, pose.png) for name, pose in zip(names, row.poses)))


def _test_rows(files: list[Path], fictitious: set[str]) -> list[Profile]:
    rows = []
    for where, _, row in _rows(files):
        profile = profile_from_row(row, f"{where} (ID {row.get('ID')!r})")
        if profile.id not in fictitious:
            raise DataError(f"{where}: ID {profile.id!r} is no Full_Set profile")
        rows.append(_named_poses(replace(profile, name=profile.id), [p.get("path") for p in row.get("images") or []]))
    return rows


def _forget_ids(release: Path, fictitious: set[str]) -> dict[str, list[str]]:
    """{percent: sorted IDs} of each official forget set present."""
    forget = {}
    for percent in FORGET_PERCENTS:
        files = _parquet_files(release, f"forget_{percent}", required=False)
        if not files:
            continue
        ids = []
        for where, columns, row in _rows(files):
            if "ID" not in columns:
                raise DataError(f"{where}: column 'ID' missing (a forget set is read for its IDs)")
            ids.append(str(row["ID"]))
        unknown = sorted(set(ids) - fictitious)
        if unknown:
            raise DataError(f"{release / f'forget_{percent}'}: IDs not in Full_Set: {unknown[:5]}")
        forget[str(percent)] = sorted(set(ids))
    return forget


def import_mllmu(release: Path) -> Benchmark:
    """Read a local copy of the MLLMU-Bench release folder into a Benchmark."""
    release = Path(release)
    if not release.is_dir():
        raise DataError(f"{release}: release folder not found")
    full = _profiles(_parquet_files(release, FULL_SET), "fictitious")
    full = _with_finetune_pairs(full, _parquet_files(release, FINETUNE_DATA, required=False))
    fictitious = {p.id for p in full}
    test = _test_rows(_parquet_files(release, TEST_SET), fictitious)
    celebrity = _profiles(_parquet_files(release, CELEBRITY_SET), "celebrity", id_prefix="celebrity-")
    clash = sorted(fictitious & {p.id for p in celebrity})
    if clash:
        raise DataError(f"{release / CELEBRITY_SET}: IDs also in Full_Set: {clash[:5]}")
    rungs = sorted({pose.difficulty for row in test for pose in row.poses}, key=lambda name: int(name[4:]))
    forget = _forget_ids(release, fictitious)
    log.info("MLLMU-Bench: %d profiles, %d Test-set rows, %d celebrities, poses %s, forget sets %s",
             len(full), len(test), len(celebrity), rungs, sorted(forget, key=int))
    manifest = {"source": "MLLMU-Bench", "release": str(release), "count": len(full),
                "test_pose_difficulties": rungs, "forget_ids": forget}
    return Benchmark(tuple(full), tuple(celebrity), tuple(test), manifest)
