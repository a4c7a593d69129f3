"""Opening a database-backed store that workers starting together may be creating at the same moment
(MLflow's tracking store, Optuna's study storage)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from mmunlearn.errors import ConfigError, one_line
from mmunlearn.secrets import mask_url_passwords

log = logging.getLogger(__name__)
T = TypeVar("T")

# Failures no retry mends, failed at once: racing workers fail on SQL (a table or row another worker has
# just made, a locked file); these name a missing driver, a URL that does not parse, a file that is no
# database or another MLflow's schema. Retrying them cost ~10 s before the one-line error.
LASTING_FAILURES = ("file is not a database", "mlflow db upgrade", "could not parse", "unable to open database file")


def is_lasting(error: Exception) -> bool:
    """Whether retrying cannot open the store (see LASTING_FAILURES)."""
    text = str(error).lower()
    return isinstance(error, ImportError) or any(marker in text for marker in LASTING_FAILURES)


def open_shared_store(open_store: Callable[[], T], store: str, fix: str, attempts: int = 5) -> T:
    """``open_store()``, tried again while workers race to create the store's tables; a failure that
    outlasts ``attempts``, or that no retry mends (`is_lasting`), ends in one line: ``<store> cannot be
    opened (<error>); <fix>``, without the password of any URL in the error's text (a driver may quote
    the URL, password and all)."""
    for attempt in range(attempts):
        try:
            return open_store()
        except Exception as error:  # noqa: BLE001 — any of the racing workers' errors, SQLAlchemy's or the library's
            if attempt == attempts - 1 or is_lasting(error):
                reason = mask_url_passwords(one_line(error, first_line_only=True))
                raise ConfigError(f"{store} cannot be opened ({type(error).__name__}: {reason}); {fix}") from None
            log.info("%s not ready, retrying", store)
            time.sleep(1 + attempt)
    raise AssertionError("attempts must be at least 1")
