"""Resumable inference: a long stage's finished batches, appended to a file as each one is done.

Training resumes from Trainer checkpoints; evaluation and attacks have no optimizer state, only
outputs, so they keep a journal instead. An interrupted ``evaluate`` or ``attack`` (a 7B model's runs
for an hour) re-runs only the batches it had not finished. The journal is keyed by a fingerprint of
everything the outputs depend on (model files, settings, questions, code): one left by other inputs
would splice in wrong answers, so it is discarded, as training does with checkpoints of other settings.
Written lines are flushed at once, so a killed process loses at most the batch it was running; a line
torn by the kill is ignored on reading.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class Journal:
    """Outputs by key (``<scope>/<batch>``) under one fingerprint, in an append-only JSON-lines file."""

    def __init__(self, path: Path, fingerprint: dict):
        self.path = Path(path)
        self.fingerprint = hashlib.sha256(json.dumps(fingerprint, sort_keys=True, default=str).encode()).hexdigest()
        self.entries: dict[str, Any] = self._read()
        if self.entries:
            log.info("resuming from %s: %d batches already done", self.path, len(self.entries))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("w", encoding="utf-8") as file:  # rewritten whole: drops a torn last line
            file.write(json.dumps({"fingerprint": self.fingerprint}) + "\n")
            file.writelines(json.dumps({"key": k, "value": v}) + "\n" for k, v in self.entries.items())
        self._file = self.path.open("a", encoding="utf-8")

    def _read(self) -> dict[str, Any]:
        if not self.path.is_file():
            return {}
        lines = self.path.read_text(encoding="utf-8").splitlines()
        try:
            header = json.loads(lines[0]) if lines else {}
        except json.JSONDecodeError:
            header = {}
        if header.get("fingerprint") != self.fingerprint:
            log.info("discarding %s: made from other inputs", self.path)
            return {}
        entries = {}
        for line in lines[1:]:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:  # the line a killed process was writing
                break
            entries[entry["key"]] = entry["value"]
        return entries

    def scope(self, name: str) -> JournalScope:
        return JournalScope(self, name)

    def get(self, key: str) -> Any | None:
        return self.entries.get(key)

    def put(self, key: str, value: Any) -> None:
        self.entries[key] = value
        self._file.write(json.dumps({"key": key, "value": value}) + "\n")
        self._file.flush()  # in the OS's hands now: survives the process being killed

    def finish(self) -> None:
        """The stage's outputs are written: nothing is left to resume."""
        self._file.close()
        self.path.unlink(missing_ok=True)


class JournalScope:
    """One pass's view of a journal (its batches numbered from 0)."""

    def __init__(self, journal: Journal, name: str):
        self.journal, self.name = journal, name

    def get(self, batch: int) -> Any | None:
        return self.journal.get(f"{self.name}/{batch}")

    def put(self, batch: int, value: Any) -> None:
        self.journal.put(f"{self.name}/{batch}", value)

    def scope(self, name: str) -> JournalScope:
        """A sub-pass's view, its batches numbered apart from this pass's."""
        return JournalScope(self.journal, f"{self.name}/{name}")


def scoped(journal: Journal | JournalScope | None, name: str) -> JournalScope | None:
    """``journal``'s view for one pass (or sub-pass), or None where nothing is journaled."""
    return journal.scope(name) if journal is not None else None


def resumed(journal: JournalScope | None, batch: int, run: Callable[[], list]) -> list:
    """Batch ``batch``'s outputs: from the journal where an earlier run finished it, else ``run()`` (journaled)."""
    done = journal.get(batch) if journal is not None else None
    if done is None:
        done = run()
        if journal is not None:
            journal.put(batch, done)
    return done


def source_fingerprint() -> dict:
    """The project's source and the libraries that compute with it: other code may give other outputs."""
    import peft
    import torch
    import transformers

    package = Path(__file__).resolve().parent
    source = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        source.update(f"{path.relative_to(package)}\n".encode() + path.read_bytes())
    return {"source": source.hexdigest(),
            "libraries": {"torch": torch.__version__, "transformers": transformers.__version__,
                          "peft": peft.__version__}}


def files_fingerprint(folder: Path, whole_up_to: int = 64 * 2**20) -> str:
    """A digest of the files under ``folder``: contents of files up to ``whole_up_to`` bytes, size and
    modification time of larger ones (a 7B model's weights are not read again just to name them)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        stat = path.stat()
        digest.update(f"{path.relative_to(folder)}:{stat.st_size}\n".encode())
        digest.update(path.read_bytes() if stat.st_size <= whole_up_to else str(stat.st_mtime_ns).encode())
    return digest.hexdigest()
