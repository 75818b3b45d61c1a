"""The identity tests' own OIDC provider: people with odd, missing, unasserted or changing emails.

``person_idp`` (module scope) runs ``tests/oidc/provider.mjs`` with the users
below; tests that change a user's email at the provider (``update_user``) get
a provider no other module shares.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from oidcfixture import OidcProvider, running_provider

__all__ = ["PEOPLE", "bearer", "person_idp"]

PEOPLE: dict[str, dict[str, Any]] = {
    # One person's email in three spellings, each from its own client (its own sub).
    "bob": {"email": "bob@example.com", "groups": ["analysts"]},
    "bob-spaced": {"email": " Bob@Example.com", "groups": ["analysts"]},
    "bob-upper": {"email": "BOB@example.com", "groups": ["analysts"]},
    "nora": {"email": "nora@example.com", "groups": ["analysts"]},  # the control: same grant, not revoked
    "noemail": {"groups": ["analysts"]},
    "unverified": {"email": "eve@example.com", "email_verified": False, "groups": ["analysts"]},
    "silent": {"email": "sam@example.com", "email_verified": None, "groups": ["analysts"]},
    "stringy": {"email": "stringy@example.com", "email_verified": "true", "groups": ["analysts"]},
    "falsy": {"email": "falsy@example.com", "email_verified": "false", "groups": ["analysts"]},
    # An admin whose email is in a token only when it is asked for (scope "email").
    "admin": {"email": "admin@example.com", "email_scope": True, "groups": ["db-admins"]},
    "admin-alias": {"email": " ADMIN@Example.COM", "groups": ["db-admins"]},
    "dave": {"email": "dave@example.com", "groups": ["db-admins"]},
    "nina": {"email": "nina@example.com", "email_scope": True, "groups": []},
    "carl": {"email": "carl@example.com", "groups": ["db-admins"]},
    "carlos": {"email": "carlos@example.com", "groups": ["db-admins"]},
    "renamed": {"email": "ren.old@example.com", "groups": ["analysts"]},
}


@pytest.fixture(scope="module")
def person_idp() -> Iterator[OidcProvider]:
    """A provider of this module's own, with ``PEOPLE`` (tests may change their claims)."""
    with running_provider(users=PEOPLE) as provider:
        yield provider


def bearer(url: str, token: str) -> httpx.Client:
    """An HTTP client to ``url`` carrying ``token``."""
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
