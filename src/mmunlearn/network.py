"""Whether a server answers at all, asked once with a short timeout.

HTTP clients (huggingface_hub's downloads, MLflow's REST client) retry a refused connection with
backoff for minutes before they fail with a traceback; a stage asks first and fails in seconds instead.
"""

from __future__ import annotations

import socket
from urllib.parse import urlparse


def unreachable(url: str, timeout: float = 10.0) -> str | None:
    """Why nothing accepts a connection at ``url``'s host and port, or None if something does."""
    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        socket.create_connection((parsed.hostname, port), timeout=timeout).close()
    except OSError as error:
        return str(error)
    return None
