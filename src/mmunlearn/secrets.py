"""What never leaves the process: credentials named in params and passwords written into URLs.

A param whose name says it holds a credential is left out of what is logged; a password in a URL's
user part (``http://user:secret@host``, ``postgresql://me:secret@db/optuna``) is masked wherever a URL
is logged or named in an error: a judge's base_url, a tracking URI or an Optuna storage may carry one.
"""

from __future__ import annotations

import re

# The name's last word names a credential (api_key, hf_token, password), not a count of tokens
# (max_new_tokens) and not the name of the variable that holds the key (api_key_env).
_CREDENTIAL_NAME = re.compile(r"(?:^|[_\-.])(?:api_?key|secret(?:_?key)?|access_?key|token|password|passwd|credentials?)$",
                              re.IGNORECASE)
_URL_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.\-]*://[^:/@\s]*):[^@/\s]*@", re.IGNORECASE)
_BEARER = re.compile(r"(\bBearer\s+)[^\s'\",]+", re.IGNORECASE)


def names_a_credential(name: str) -> bool:
    """Whether a (flattened) param name says its value is a credential."""
    return bool(_CREDENTIAL_NAME.search(name))


def mask_url_passwords(text: str) -> str:
    """``text`` with the password of every URL in it replaced by ``***`` (user and host kept)."""
    return _URL_PASSWORD.sub(r"\1:***@", text)


def redact(text: str, secrets: tuple[str, ...] = ()) -> str:
    """``text`` safe to log: URL passwords, bearer tokens and each of ``secrets`` replaced by ``***``.
    A server's error may quote the request back (a proxy's echo, a debug page), key included."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return _BEARER.sub(r"\1***", mask_url_passwords(text))
