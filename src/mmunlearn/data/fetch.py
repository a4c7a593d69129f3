"""Materialise ``data/benchmark`` on a fresh clone: ``dvc pull`` when a remote answers, else regenerate.

The generator is deterministic, so regenerating with the committed params gives the very bytes
``data.dvc`` pins and ``dvc status data.dvc`` comes back clean. When it does not (the generator or
its params changed), that difference is the audit trail: ``dvc commit data.dvc`` records it.
Data the generator did not write (an import, the real benchmark) is never replaced by generated data,
and with ``data.source: pinned`` nothing is generated at all.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

from mmunlearn.atomic import atomic_dir
from mmunlearn.config import Params
from mmunlearn.data.schema import MANIFEST_FILE, load_manifest, save_benchmark
from mmunlearn.data.synthetic import GENERATOR, generate_benchmark, settings_changed_since
from mmunlearn.errors import DataError

log = logging.getLogger(__name__)


def synthesise(params: Params, out: Path | None = None) -> Path:
    """Generate the synthetic benchmark into ``out`` (default: paths.benchmark), all-or-nothing."""
    target = Path(out or params.paths.benchmark)
    benchmark = generate_benchmark(params.data)
    with atomic_dir(target, marks=(MANIFEST_FILE,)) as staging:
        save_benchmark(staging, benchmark)
    log.info("wrote %s (%d profiles, %d celebrities)", target, len(benchmark.full), len(benchmark.celebrity))
    return target


def _dvc_repo(root: Path):
    from dvc.repo import Repo  # slow import: only for fetch

    return Repo(str(root))


def tracked_data_is_current(root: Path, dvc_file: Path) -> bool:
    """True when the workspace holds exactly what ``dvc_file`` pins (then cached, if the cache lacked it).

    The workspace's hash is compared with the pinned one: ``dvc status`` says only "not in cache" for an
    output missing from the cache, whatever the workspace holds, and committing on that word rewrote
    ``dvc_file`` with whatever a fresh clone regenerated."""
    with _dvc_repo(root) as repo:
        (stage,) = repo.stage.collect(str(dvc_file))
        pinned = stage.outs
        if not all(out.exists and out.get_hash().value == out.hash_info.value for out in pinned):
            return False
        if any(out.changed_cache() for out in pinned):  # same bytes (e.g. regenerated on a fresh clone)
            repo.commit(str(dvc_file), force=True)
        return True


def _has_remote(root: Path) -> bool:
    with _dvc_repo(root) as repo:
        return bool(repo.config.get("remote"))


def _try_pull(root: Path, dvc_file: Path, timeout_s: float | None) -> bool:
    """``dvc pull`` in a child process that is stopped after ``timeout_s``: a remote that accepts the
    connection and then says nothing kept an in-process pull waiting for over 8 minutes."""
    if not _has_remote(root):
        return False
    # its own process group, so that stopping it also stops whatever it started (ssh, a helper)
    child = subprocess.Popen([sys.executable, "-m", "dvc", "pull", str(dvc_file.resolve())],
                             cwd=root, process_group=0)
    try:
        code = child.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        log.warning("dvc pull brought nothing within %s s (data.pull_timeout_s); regenerating instead", timeout_s)
        return False
    finally:
        if child.poll() is None:  # timed out or interrupted (Ctrl-C reaches only our group)
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
    if code != 0:
        log.warning("dvc pull failed (exit status %d, its message above); regenerating instead", code)
        return False
    return True


def _versions(root: Path, dvc_file: Path, folder: Path) -> bool:
    """True when ``dvc_file`` (in a DVC repo) pins ``folder``: paths.benchmark may point elsewhere."""
    if not (dvc_file.is_file() and (root / ".dvc").is_dir()):
        return False
    with _dvc_repo(root) as repo:
        (stage,) = repo.stage.collect(str(dvc_file))
        return any(Path(out.fs_path).resolve() == folder.resolve() for out in stage.outs)


def _holds_other_data(folder: Path) -> bool:
    """True when ``folder`` holds files the generator did not write (an import, the real benchmark)."""
    if folder.exists() and not folder.is_dir():
        raise DataError(f"{folder} (paths.benchmark) is a file, not a benchmark folder")
    if not folder.is_dir() or not any(folder.iterdir()):
        return False
    try:
        manifest = load_manifest(folder)
    except DataError:  # not JSON: not the generator's
        return True
    return not (isinstance(manifest, dict) and manifest.get("generator") == GENERATOR)


def _settings_changed(folder: Path, params: Params) -> list[str]:
    """How params.data differs from what generated ``folder`` ([] if it does not, if no generated data is
    there, or where nothing may be generated: ``data.source: pinned``)."""
    if params.data.source != "synthetic" or not (folder / MANIFEST_FILE).is_file():
        return []
    try:
        return settings_changed_since(load_manifest(folder), params.data)
    except DataError:  # not JSON: not the generator's
        return []


def fetch(params: Params, root: Path = Path(".")) -> str:
    """Make the benchmark present; returns how: "present", "pulled" or "generated"."""
    dvc_file = root / params.paths.data_dvc
    benchmark_dir = root / params.paths.benchmark
    pinned = _versions(root, dvc_file, benchmark_dir)
    changed = _settings_changed(benchmark_dir, params)
    if changed:  # the data.dvc version is the old settings' data: neither it nor a pull is what is asked for
        log.info("%s was generated with other settings (%s); regenerating", benchmark_dir, "; ".join(changed))
    elif pinned and benchmark_dir.is_dir() and tracked_data_is_current(root, dvc_file):
        log.info("%s is present and matches %s", benchmark_dir, dvc_file)
        return "present"
    if not changed and pinned and _try_pull(root, dvc_file, params.data.pull_timeout_s) \
            and tracked_data_is_current(root, dvc_file):
        changed = _settings_changed(benchmark_dir, params)
        if not changed:
            log.info("pulled %s from the DVC remote", benchmark_dir)
            return "pulled"
        log.info("pulled %s, but it was generated with other settings (%s); regenerating", benchmark_dir,
                 "; ".join(changed))
    if _holds_other_data(benchmark_dir):  # replacing it with generated data would lose it
        if pinned:
            log.warning("%s is not what %s pins and no DVC remote brought that version; kept as it is, since the "
                        "generator did not write it (`dvc commit %s` records it, `dvc checkout %s` restores the "
                        "pinned version from the cache)", benchmark_dir, dvc_file, dvc_file, dvc_file)
        else:
            log.info("%s holds data the generator did not write; kept as it is (%s does not version it: "
                     "`dvc add %s` does)", benchmark_dir, dvc_file, benchmark_dir)
        return "present"
    if params.data.source == "pinned":
        why = (f"is missing or not what {dvc_file} pins, and no DVC remote brought it (`dvc remote add -d`)"
               if pinned else f"is missing and {dvc_file} does not version it")
        raise DataError(f"data.source is 'pinned', so nothing is generated, but {benchmark_dir} (paths.benchmark) "
                        f"{why}; data.source: synthetic generates the synthetic benchmark instead")
    synthesise(params, benchmark_dir)
    if pinned and not tracked_data_is_current(root, dvc_file):
        log.warning("regenerated %s differs from %s (generator or data params changed); "
                    "`dvc commit %s` records the new version", benchmark_dir, dvc_file, dvc_file)
    return "generated"
