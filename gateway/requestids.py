"""Request ids: made by the gateway, unique and unpredictable (SECURITY rule 30).

An id is 32 hex digits (128 bits): BLAKE2b, keyed with 32 random bytes drawn
once per process, over a per-process counter. Keyed BLAKE2b is a PRF, so
without the key the next id cannot be guessed from any number of earlier ones,
and distinct counter values under one key never collide in practice (nor do
ids of two processes, whose keys are independent). It costs about a
microsecond and no system call: ``secrets.token_hex`` would make a
``getrandom()`` call per request, which releases the GIL, and getting it back
can wait for another thread's switch interval.

A caller's own ``X-Request-ID`` is never the gateway's id: when it is sane
(:func:`client_request_id`) it is kept beside it as ``client_request_id``, in
the audit records and the reply, and nowhere else (not in the statement
comment, not as a key of anything).
"""

from __future__ import annotations

import hashlib
import itertools
import re
import secrets

_SANE_CLIENT_ID = re.compile(r"[A-Za-z0-9._:\-]{1,64}")
KEY_BYTES = 32


class RequestIds:
    """Makes request ids; ``key`` (random by default) is a parameter so tests can fix it."""

    def __init__(self, key: bytes | None = None) -> None:
        # A keyed state prepared once; each id copies it (cheaper than keying anew).
        self._keyed = hashlib.blake2b(key=key if key is not None else secrets.token_bytes(KEY_BYTES), digest_size=16)
        self._counter = itertools.count()

    def new(self) -> str:
        """A fresh id: 32 lowercase hex digits."""
        digest = self._keyed.copy()
        digest.update(next(self._counter).to_bytes(8, "big"))
        return digest.hexdigest()


def client_request_id(offered: str) -> str | None:
    """The caller's ``X-Request-ID`` if it is 1-64 characters of ``[A-Za-z0-9._:-]``, else ``None``."""
    return offered if _SANE_CLIENT_ID.fullmatch(offered) else None
