"""The reachability check asks what the HTTP clients would connect to: the server, or the proxy chosen for it."""

from __future__ import annotations

import socket

import pytest

from mmunlearn.network import first_hop, unreachable


@pytest.fixture
def listening():
    server = socket.create_server(("127.0.0.1", 0))
    yield server.getsockname()[1]
    server.close()


def _closed_port() -> int:
    probe = socket.create_server(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    return port


@pytest.fixture
def no_proxies(monkeypatch):
    for name in ("http_proxy", "https_proxy", "no_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    return monkeypatch


def test_without_a_proxy_the_server_itself_is_asked(no_proxies, listening):
    assert first_hop("https://huggingface.co") == ("huggingface.co", 443, None)
    assert unreachable(f"http://127.0.0.1:{listening}/api") is None
    assert "refused" in unreachable(f"http://127.0.0.1:{_closed_port()}/api").lower()


def test_behind_a_proxy_the_proxy_is_asked_unless_no_proxy_names_the_host(no_proxies, listening):
    # a host that cannot resolve: reachable only through the proxy, as a model hub behind a company proxy
    no_proxies.setenv("HTTPS_PROXY", f"http://user:password@127.0.0.1:{listening}")
    assert first_hop("https://hub.invalid/models") == ("127.0.0.1", listening, f"127.0.0.1:{listening}")
    assert unreachable("https://hub.invalid/models") is None
    no_proxies.setenv("NO_PROXY", "hub.invalid")
    assert first_hop("https://hub.invalid/models") == ("hub.invalid", 443, None)
    assert unreachable("https://hub.invalid/models", timeout=2.0) is not None
    no_proxies.delenv("NO_PROXY")
    closed = _closed_port()
    no_proxies.setenv("HTTPS_PROXY", f"http://user:password@127.0.0.1:{closed}")
    why = unreachable("https://hub.invalid/models")
    assert why.startswith(f"through the proxy 127.0.0.1:{closed}: ") and "password" not in why
