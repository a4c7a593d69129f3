"""Write outputs all-or-nothing: build under a temporary sibling path, then rename into place.

A crash or an error mid-way leaves the previous output (or nothing), never a half-written one. A folder
is replaced only when it is an earlier output of the same kind (it holds one of the writer's mark files)
or empty: a mistyped path (``--out data``, paths.splits set to the folder that holds the benchmark) was
wiped whole. Outputs get the permissions the umask gives new files (temporary ones are private). A JSON
output read back by a later stage (``read_json``) fails with one line naming the file if it is not one.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from mmunlearn.errors import DataError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _publish(path: Path, mode: int) -> None:
    """Give a temporary (owner-only) path the mode ``open``/``mkdir`` would have given it; a folder's
    files too (safetensors writes its files 0600 as mkstemp does), executables kept executable."""
    mask = _umask()
    path.chmod(mode & ~mask)
    if path.is_dir():
        for inner in path.rglob("*"):
            if inner.is_symlink():
                continue
            executable = inner.is_dir() or inner.stat().st_mode & 0o100
            inner.chmod((0o777 if executable else 0o666) & ~mask)


def _check_replaceable(target: Path, marks: tuple[str, ...]) -> None:
    if target.exists() and not target.is_dir():
        raise DataError(f"{target}: is a file, not a folder; refusing to replace it")
    if target.is_dir() and not any((target / mark).is_file() for mark in marks):
        entries = sorted(entry.name for entry in target.iterdir())
        if entries:
            shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
            raise DataError(f"{target}: holds files this command did not write ({shown}); refusing to replace "
                            "it: move them, or write to another folder")


def _writable(target: Path, make_staging):
    """``make_staging()`` in ``target``'s folder, made first; a folder that cannot be written is named."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        return make_staging()
    except OSError as exc:
        raise DataError(f"{target}: cannot write there ({exc.strerror or exc})") from None


@contextlib.contextmanager
def atomic_dir(target: Path, marks: tuple[str, ...]) -> Iterator[Path]:
    """Yield an empty temporary directory; on success it replaces ``target`` whole. ``marks``: the file
    names (any one) that show ``target`` is an earlier output of this kind; any other non-empty folder,
    or a file, is left alone with a DataError, checked before the work and again before the swap."""
    target = Path(target)
    _check_replaceable(target, marks)
    staging = _writable(target, lambda: Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent)))
    try:
        yield staging
        _check_replaceable(target, marks)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _publish(staging, 0o777)
    retired = None
    if target.exists():
        retired = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, retired)
    os.replace(staging, target)
    if retired is not None:
        shutil.rmtree(retired, ignore_errors=True)


@contextlib.contextmanager
def atomic_file(target: Path) -> Iterator[Path]:
    """Yield a temporary file path in the target's folder; on success it replaces ``target``."""
    target = Path(target)
    fd, tmp_name = _writable(target, lambda: tempfile.mkstemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    os.close(fd)
    staging = Path(tmp_name)
    try:
        yield staging
    except BaseException:
        staging.unlink(missing_ok=True)
        raise
    _publish(staging, 0o666)
    os.replace(staging, target)


def write_json(target: Path, payload: Any) -> None:
    """Write JSON atomically, with sorted keys so equal content gives equal bytes."""
    with atomic_file(target) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def write_json_lines(target: Path, records: Iterable[Any]) -> None:
    """Write one JSON object per line (sorted keys) atomically."""
    write_text(target, "".join(json.dumps(record, sort_keys=True) + "\n" for record in records))


def read_json(path: Path) -> dict:
    """The JSON object in ``path``, or a DataError naming the file: unreadable, not JSON, or not an object."""
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot be read ({exc})") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
    if not isinstance(value, dict):
        raise DataError(f"{path}: expected a JSON object, found {type(value).__name__}")
    return value


def read_json_lines(path: Path) -> list[dict]:
    """One JSON object per line, or a DataError naming the file and line."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot be read ({exc})") from None
    records = []
    for number, line in enumerate(lines, start=1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: line {number} is not valid JSON ({exc.msg})") from None
        if not isinstance(record, dict):
            raise DataError(f"{path}: line {number}: expected a JSON object, found {type(record).__name__}")
        records.append(record)
    return records


def write_text(target: Path, text: str) -> None:
    with atomic_file(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
