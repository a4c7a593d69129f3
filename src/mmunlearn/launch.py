"""The ``mmunlearn`` command: runs the CLI directly, or through a warm preload server.

A study is ~75 short stage processes, and each one spends ~8.5 s of a 2-core machine importing torch,
transformers, peft and mlflow before doing 5–20 s of work (measured: README, "Set-up"). With
``MMUNLEARN_PRELOAD=1`` (``make run`` sets it) the command instead hands its argv, working directory,
environment and stdin/stdout/stderr to a server that imported those libraries once and forks a child
per command (``mmunlearn.preload``): same code, same outputs, ~8 s less per stage. The child imports
mmunlearn itself afresh, so edits to the project are always seen; the server is keyed on the Python,
its installed packages and the environment, and exits after 60 idle seconds (``MMUNLEARN_PRELOAD_IDLE_S``).
Anywhere a Unix socket or ``fork`` is missing, the command simply runs in-process.
"""

from __future__ import annotations

import os
import sys

PRELOAD_ENV = "MMUNLEARN_PRELOAD"


def preload_requested(environ=os.environ) -> bool:
    return environ.get(PRELOAD_ENV, "").strip().lower() not in ("", "0", "false", "no", "off")


def main() -> None:
    if preload_requested():
        status = _through_preload_server()
        if status is not None:
            sys.exit(status)
    from mmunlearn.cli import main as cli_main

    cli_main()


def _through_preload_server() -> int | None:
    """The command's exit status, or None when no server could take it (it then runs here)."""
    try:
        from mmunlearn import preload  # needs fcntl / AF_UNIX: POSIX only
    except ImportError as why:
        reason = str(why)
    else:
        try:
            return preload.run_through_server(sys.argv)
        except preload.PreloadUnavailable as why:
            reason = str(why)
    print(f"mmunlearn: preload server unavailable ({reason}); running directly", file=sys.stderr)
    return None
