"""A fork server that keeps torch / transformers / peft / mlflow imported between stage commands.

Client (``run_through_server``): connects to the server for this Python + installed packages +
environment (starting it if none listens), sends argv, working directory and environment with its
stdin/stdout/stderr descriptors (SCM_RIGHTS), forwards SIGINT/SIGTERM/SIGHUP to the command, and
returns the command's exit status.

Server (``python -m mmunlearn.preload ADDRESS``): imports ``PRELOADED`` once, then per connection forks
a handler, which forks the command process (so a crash or a signal still yields a status) and waits
for it; if the client disappears the command is terminated. The command process takes over the
client's descriptors, directory and environment, drops every ``mmunlearn`` module the server had
imported (so it runs the project's current code) and runs the CLI; exit handlers run as at a normal
exit. The server never runs torch code itself, so forking it is safe.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import hashlib
import importlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

from mmunlearn.launch import PRELOAD_ENV

# Libraries every stage imports (~1.3 s of them is MLflow's SQL store, alembic and SQLAlchemy, imported
# when a stage opens its run); a name this environment lacks is skipped.
PRELOADED = ("torch", "transformers", "transformers.modeling_utils", "transformers.processing_utils",
             "transformers.trainer", "transformers.generation", "peft", "mlflow", "rouge_score.rouge_scorer",
             "mlflow.store.tracking.sqlalchemy_store", "mlflow.store.artifact.local_artifact_repo",
             "git", "typer", "PIL.Image", "PIL.PngImagePlugin")
PRELOAD_IDLE_S = 60
IDLE_ENV = "MMUNLEARN_PRELOAD_IDLE_S"  # overrides PRELOAD_IDLE_S
START_TIMEOUT_S = 300            # the server's imports take ~9 s on an idle 2-core machine
# Set per invocation by the shell, or by `dvc repro` (DVC_STAGE); no import reads them. The command
# itself still gets them.
PER_COMMAND_VARIABLES = frozenset({"PWD", "OLDPWD", "SHLVL", "_", "DVC_STAGE"})
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class PreloadUnavailable(RuntimeError):
    """The command could not be handed to a server; the caller runs it directly."""


def supported() -> bool:
    return hasattr(socket, "AF_UNIX") and hasattr(os, "fork") and hasattr(socket, "send_fds")


def server_address(environ) -> Path:
    """One socket per (interpreter, installed packages, environment): a server never serves a stale setup."""
    stamps = [(entry, os.stat(entry).st_mtime_ns) for entry in sys.path if entry and os.path.isdir(entry)]
    env = sorted((k, v) for k, v in environ.items() if k not in PER_COMMAND_VARIABLES)
    key = json.dumps([os.path.realpath(sys.executable), sys.version, stamps, env])
    folder = Path(environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()) / f"mmunlearn-preload-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    if folder.stat().st_uid != os.getuid() or folder.stat().st_mode & 0o077:
        raise PreloadUnavailable(f"{folder} is not private to this user")
    return folder / f"{hashlib.sha256(key.encode()).hexdigest()[:20]}.sock"


# ---------------------------------------------------------------- messages: one JSON object per line

def _send(conn: socket.socket, message: dict, fds: list[int] | None = None) -> None:
    data = json.dumps(message).encode() + b"\n"
    if fds:
        sent = socket.send_fds(conn, [data], fds)
        data = data[sent:]
    conn.sendall(data)


class _Lines:
    """Reads newline-terminated JSON messages (and descriptors sent with the first bytes)."""

    def __init__(self, conn: socket.socket):
        self.conn, self.buffer, self.fds = conn, b"", []

    def read(self, with_fds: bool = False) -> dict | None:
        while b"\n" not in self.buffer:
            if with_fds and not self.fds:
                data, fds, _flags, _addr = socket.recv_fds(self.conn, 65536, 3)
                self.fds.extend(fds)
            else:
                data = self.conn.recv(65536)
            if not data:
                return None
            self.buffer += data
        line, self.buffer = self.buffer.split(b"\n", 1)
        return json.loads(line)


# ---------------------------------------------------------------- client

def _connect(address: Path) -> socket.socket | None:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(str(address))
        return conn
    except (FileNotFoundError, ConnectionRefusedError):
        conn.close()
        return None


def _start_server(address: Path) -> socket.socket:
    with contextlib.suppress(FileNotFoundError):
        address.unlink()  # a dead server's socket
    log_path = address.with_suffix(".log")
    with open(log_path, "ab") as log:
        server = subprocess.Popen([sys.executable, "-P", "-m", "mmunlearn.preload", str(address)], cwd="/",
                                  stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    print(f"mmunlearn: started a preload server (pid {server.pid}, log {log_path})", file=sys.stderr)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        conn = _connect(address)
        if conn is not None:
            return conn
        if server.poll() is not None:
            raise PreloadUnavailable(f"the server exited with status {server.returncode} (see {log_path})")
        time.sleep(0.1)
    server.kill()
    raise PreloadUnavailable(f"the server did not listen within {START_TIMEOUT_S} s (see {log_path})")


def _connect_or_start(address: Path) -> socket.socket:
    conn = _connect(address)
    if conn is not None:
        return conn
    with open(address.with_suffix(".lock"), "w") as lock:  # one starter at a time
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _connect(address) or _start_server(address)


def _own_descriptors() -> list[int]:
    """stdin/stdout/stderr to hand over; a closed one is replaced by /dev/null."""
    fds = []
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
            fds.append(fd)
        except OSError:
            fds.append(os.open(os.devnull, os.O_RDWR))
    return fds


def run_through_server(argv: list[str]) -> int:
    """Run ``argv`` (as the ``mmunlearn`` command) in a process forked by the preload server."""
    if not supported():
        raise PreloadUnavailable("needs Unix sockets, fork and descriptor passing")
    address = server_address(os.environ)
    conn = _connect_or_start(address)
    env = dict(os.environ)
    env.pop(PRELOAD_ENV, None)  # the command itself runs directly
    with conn:
        sys.stdout.flush()
        sys.stderr.flush()
        _send(conn, {"argv": argv, "cwd": os.getcwd(), "env": env}, _own_descriptors())
        lines = _Lines(conn)
        started = lines.read()
        if started is None:
            raise PreloadUnavailable("the server closed the connection before starting the command")
        pid = started["pid"]
        previous = {sig: signal.signal(sig, lambda signum, _frame: _forward(pid, signum)) for sig in FORWARDED_SIGNALS}
        try:
            finished = lines.read()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    if finished is None:
        print("mmunlearn: the preload server lost the command (no exit status)", file=sys.stderr)
        return 1
    return int(finished["exit"])


def _forward(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


# ---------------------------------------------------------------- server

def serve(address: Path, idle_s: float = PRELOAD_IDLE_S) -> None:
    for name in PRELOADED:
        try:
            importlib.import_module(name)
        except ImportError as exc:  # an optional library missing: its commands import it themselves
            print(f"preload: {name} not preloaded ({exc})", flush=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(address))
    listener.listen(64)
    listener.settimeout(1.0)
    print(f"preload: pid {os.getpid()} serving {address}", flush=True)
    handlers: set[int] = set()
    last_activity = time.monotonic()
    while True:
        if _reap(handlers):
            last_activity = time.monotonic()
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            if not handlers and time.monotonic() - last_activity > idle_s:
                break
            continue
        handlers.add(_fork_handler(conn, listener))
        last_activity = time.monotonic()
    # Stop being found, then serve whoever connected in between.
    with contextlib.suppress(FileNotFoundError):
        address.unlink()
    listener.setblocking(False)
    with contextlib.suppress(BlockingIOError):
        while True:
            conn, _ = listener.accept()
            conn.setblocking(True)
            _fork_handler(conn, listener)
    listener.close()
    print(f"preload: idle for {idle_s} s, exiting", flush=True)


def _reap(children: set[int]) -> bool:
    ended = False
    for pid in list(children):
        done, _status = os.waitpid(pid, os.WNOHANG)
        if done:
            children.discard(pid)
            ended = True
    return ended


def _fork_handler(conn: socket.socket, listener: socket.socket) -> int:
    pid = os.fork()
    if pid:
        conn.close()
        return pid
    try:
        listener.close()
        _handle(conn)
    finally:
        os._exit(0)


def _handle(conn: socket.socket) -> None:
    lines = _Lines(conn)
    request = lines.read(with_fds=True)
    if request is None or len(lines.fds) != 3:
        return
    command = os.fork()
    if command == 0:
        conn.close()
        _run_command(request, lines.fds)
    for fd in lines.fds:
        os.close(fd)
    _send(conn, {"pid": command})
    status = _wait(command, conn)
    with contextlib.suppress(OSError):
        _send(conn, {"exit": status})


def _wait(command: int, conn: socket.socket) -> int:
    """The command's exit status (128 + signal if killed); terminates it if the client goes away."""
    client_gone = False
    while True:
        done, status = os.waitpid(command, os.WNOHANG)
        if done:
            code = os.waitstatus_to_exitcode(status)
            return 128 - code if code < 0 else code
        readable, _, _ = select.select([] if client_gone else [conn], [], [], 0.2)
        if readable and not conn.recv(1):
            client_gone = True
            _forward(command, signal.SIGTERM)


def _run_command(request: dict, fds: list[int]) -> None:
    """In the forked command process: become the client's command, run the CLI, exit with its status."""
    code = 1
    try:
        for target, fd in zip((0, 1, 2), fds):
            os.dup2(fd, target)
        for fd in fds:
            if fd > 2:
                os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.argv = list(request["argv"])
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        sys.stdout.reconfigure(line_buffering=os.isatty(1))
        for name in [m for m in sys.modules if m == "mmunlearn" or m.startswith("mmunlearn.")]:
            del sys.modules[name]
        code = _exit_status()
    finally:
        with contextlib.suppress(Exception):
            atexit._run_exitfuncs()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)


def _exit_status() -> int:
    """Run the CLI as a fresh interpreter would and return the status it would exit with."""
    try:
        from mmunlearn.cli import main

        main()
        return 0
    except SystemExit as exit_request:
        if exit_request.code is None or isinstance(exit_request.code, int):
            return exit_request.code or 0
        print(exit_request.code, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        traceback.print_exc()
        return 128 + signal.SIGINT
    except BaseException:  # noqa: BLE001 — as the interpreter does: print and exit 1
        traceback.print_exc()
        return 1


if __name__ == "__main__":
    serve(Path(sys.argv[1]), float(os.environ.get(IDLE_ENV, PRELOAD_IDLE_S)))
