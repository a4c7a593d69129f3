"""Whether a server answers at all, asked once with a short timeout.

HTTP clients (huggingface_hub's downloads, MLflow's REST client, the judge's OpenAI client) retry a
refused connection with backoff for minutes before they fail with a traceback; a stage asks first and
fails in seconds instead. Those clients go through the proxy that HTTP(S)_PROXY / NO_PROXY choose, so
the question is asked of that proxy: asked of the server itself, it would fail where only the proxy
may reach the outside.
"""

from __future__ import annotations

import socket
import urllib.request
from urllib.parse import urlparse


def _default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80


def first_hop(url: str) -> tuple[str, int, str | None]:
    """(host, port, the proxy's name or None) of what a client honouring the proxy variables connects to
    for ``url``."""
    parsed = urlparse(url)
    host = parsed.hostname or ""
    proxy = urllib.request.getproxies().get(parsed.scheme)
    if proxy and not urllib.request.proxy_bypass(host):
        through = urlparse(proxy if "://" in proxy else f"http://{proxy}")
        port = through.port or _default_port(through.scheme)
        # host and port only: a proxy URL may carry a user and password
        return through.hostname or "", port, f"{through.hostname}:{port}"
    return host, parsed.port or _default_port(parsed.scheme), None


def unreachable(url: str, timeout: float = 10.0) -> str | None:
    """Why nothing accepts a connection at ``url``'s host and port (or its proxy's), or None if something does."""
    host, port, proxy = first_hop(url)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as error:
        return f"through the proxy {proxy}: {error}" if proxy else str(error)
    return None
