"""The preload server runs the real ``mmunlearn`` command with the same result, status and streams."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mmunlearn.launch import preload_requested
from tests.conftest import SMALL_DATA, write_params

CLI = str(Path(sys.executable).parent / "mmunlearn")


@pytest.fixture
def runtime_dir(tmp_path_factory):
    """A private socket folder, so the test's servers are its own; they exit 3 s after their last command."""
    folder = tmp_path_factory.mktemp("runtime")
    folder.chmod(0o700)
    return folder


def _env(runtime_dir, preload: bool, **extra) -> dict:
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime_dir), "MMUNLEARN_PRELOAD_IDLE_S": "3", **extra}
    env.pop("MMUNLEARN_PRELOAD", None)
    if preload:
        env["MMUNLEARN_PRELOAD"] = "1"
    return env


def _run(args, cwd, env):
    return subprocess.run([CLI, *args], check=False, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def _project(folder: Path) -> Path:
    folder.mkdir()
    write_params(folder, data=SMALL_DATA)
    return folder


def _sockets(runtime_dir) -> list[Path]:
    return sorted(runtime_dir.rglob("*.sock"))


def test_preload_is_opt_in():
    assert not preload_requested({})
    assert not preload_requested({"MMUNLEARN_PRELOAD": "0"})
    assert preload_requested({"MMUNLEARN_PRELOAD": "1"})


def test_preloaded_command_writes_the_same_bytes_and_reuses_one_server(tmp_path, runtime_dir):
    direct, first, second = (_project(tmp_path / name) for name in ("direct", "first", "second"))
    expected = _run(["data", "synth"], direct, _env(runtime_dir, preload=False))
    assert expected.returncode == 0, expected.stderr
    assert _sockets(runtime_dir) == []

    started = _run(["data", "synth"], first, _env(runtime_dir, preload=True))
    assert started.returncode == 0, started.stderr
    assert "started a preload server" in started.stderr
    reused = _run(["data", "synth"], second, _env(runtime_dir, preload=True))
    assert reused.returncode == 0, reused.stderr
    assert "started a preload server" not in reused.stderr
    assert reused.stdout == expected.stdout.replace(str(direct), str(second))  # stdout passes through as is
    assert len(_sockets(runtime_dir)) == 1

    def files(project):
        root = project / "data" / "benchmark"
        return {p.relative_to(root): p.read_bytes() for p in root.rglob("*") if p.is_file()}

    assert files(first) == files(second) == files(direct) != {}


def test_errors_keep_their_status_and_message(tmp_path, runtime_dir):
    project = _project(tmp_path / "p")
    direct = _run(["--params", "nope.yaml", "data", "synth"], project, _env(runtime_dir, preload=False))
    preloaded = _run(["--params", "nope.yaml", "data", "synth"], project, _env(runtime_dir, preload=True))
    assert direct.returncode == preloaded.returncode == 2
    assert "nope.yaml" in preloaded.stderr
    assert preloaded.stderr.splitlines()[-1] == direct.stderr.splitlines()[-1]


def test_another_environment_gets_another_server_and_idle_servers_exit(tmp_path, runtime_dir):
    project = _project(tmp_path / "p")
    assert _run(["--help"], project, _env(runtime_dir, preload=True)).returncode == 0
    (first,) = _sockets(runtime_dir)
    assert _run(["--help"], project, _env(runtime_dir, preload=True, HF_HOME=str(tmp_path))).returncode == 0
    assert set(_sockets(runtime_dir)) - {first}  # import-time settings differ: never share a server
    deadline = time.monotonic() + 30
    while _sockets(runtime_dir) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _sockets(runtime_dir) == []


def test_a_signal_to_the_client_stops_the_command(tmp_path, runtime_dir):
    project = _project(tmp_path / "p")
    assert _run(["data", "synth"], project, _env(runtime_dir, preload=True)).returncode == 0
    # pretraining the tiny base runs for minutes: interrupt it once it has started
    client = subprocess.Popen([CLI, "base"], cwd=project, env=_env(runtime_dir, preload=True),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(8)
    assert client.poll() is None
    client.send_signal(signal.SIGTERM)
    _out, err = client.communicate(timeout=30)
    assert client.returncode == 128 + signal.SIGTERM, err
    assert not (project / "models" / "base").exists()  # nothing half-written
