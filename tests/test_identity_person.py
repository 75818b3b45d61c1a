"""One person, one identity (SECURITY rule 26), at the token validator, with real tokens from the real provider.

The name used is asserted (``email_verified``), canonical, never a silent
fallback to ``sub``; the person is (issuer, sub); the names a person was seen
with are remembered (``gateway.identity.aliases``) and revocations follow them.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from identityfixture import person_idp
from oidcfixture import OidcProvider

from gateway.errors import ConfigError, IdentityUnavailable, Unauthenticated
from gateway.identity.aliases import AliasRegistry, SqliteAliasRegistry
from gateway.identity.oidc import IssuerConfig, JwksCache
from gateway.identity.tokens import TokenValidator
from gateway.policy.decide import active_revocations, effective_grants
from gateway.policy.types import Access, Grant, PolicySet, Revocation

__all__ = ["person_idp"]
pytestmark = pytest.mark.anyio
NOW = datetime(2026, 6, 1, tzinfo=UTC)


@contextlib.asynccontextmanager
async def validator_for(
    provider: OidcProvider, aliases: AliasRegistry | None = None, **overrides: Any
) -> AsyncIterator[TokenValidator]:
    """A validator trusting ``provider`` through a real ``JwksCache`` (discovery and JWKS over HTTP)."""
    config = IssuerConfig(issuer=provider.issuer, audience=provider.audience, **overrides)
    async with httpx.AsyncClient() as client:
        cache = JwksCache(config, client=client)
        yield TokenValidator([config], {config.issuer: cache}, aliases=aliases)


async def refusal(validator: TokenValidator, token: str) -> Unauthenticated:
    """Validate ``token``, expecting the validator's own ``Unauthenticated``; return it."""
    with pytest.raises(Unauthenticated) as caught:
        await validator.validate(token)
    return caught.value


def policy(*, grants: tuple[Grant, ...] = (), revoked: tuple[str, ...] = ()) -> PolicySet:
    """A policy with ``grants`` and a revocation of each subject in ``revoked`` on every target."""
    revocations = tuple(Revocation(s, "*", "left", None, "p.yaml", 1) for s in revoked)
    return PolicySet(
        roles={"admin": frozenset(), "auditor": frozenset()}, grants=grants, revocations=revocations, revision="r"
    )


def grant_for(subject: str) -> Grant:
    """A read grant on ``shop`` for ``subject``."""
    return Grant(
        "g", (subject,), "shop", Access.READ, "gw_reader", None, (), None, None, None, frozenset(), "p.yaml", 1
    )


# --- the name used -----------------------------------------------------------------------


async def test_spellings_of_one_email_are_one_name(person_idp: OidcProvider) -> None:
    """' Bob@Example.com' and 'BOB@example.com' (two clients, two subs) are both the name bob@example.com."""
    async with validator_for(person_idp) as validator:
        people = [await validator.validate(person_idp.token(c)) for c in ("bob", "bob-spaced", "bob-upper")]
    assert {p.user for p in people} == {"bob@example.com"}
    assert [p.person for p in people] == [(person_idp.issuer, c) for c in ("bob", "bob-spaced", "bob-upper")]
    assert all(p.subjects == {"user:bob@example.com", "group:analysts"} for p in people)


async def test_group_names_are_canonical(person_idp: OidcProvider) -> None:
    """Groups from the token meet policy subjects in canonical form: ' DB Admins' is group:db admins."""
    claims = person_idp.claims(groups=[" DB Admins", "Analysts", "analysts"])
    async with validator_for(person_idp) as validator:
        identity = await validator.validate(person_idp.forge(claims))
    assert identity.groups == {"db admins", "analysts"}
    assert {"group:db admins", "group:analysts"} <= identity.subjects


async def test_token_without_email_is_refused(person_idp: OidcProvider) -> None:
    """A real token lacking the user claim is refused by the validator; its sub never becomes the name."""
    async with validator_for(person_idp) as validator:
        error = await refusal(validator, person_idp.token("noemail"))
    assert error.reason == "token has no 'email' claim (and the issuer has no fallback_claim)"
    assert error.unverified_subject == "noemail"


@pytest.mark.parametrize(
    ("client", "reason"),
    [
        ("unverified", "email_verified is not true"),
        ("falsy", "email_verified is not true"),
        ("silent", "no email_verified claim"),
    ],
)
async def test_email_the_issuer_does_not_assert_is_refused(person_idp: OidcProvider, client: str, reason: str) -> None:
    """``email_verified`` false (or "false"), or absent without ``assume_email_verified``: 401."""
    async with validator_for(person_idp) as validator:
        error = await refusal(validator, person_idp.token(client))
    assert error.reason == f"claim 'email': the issuer does not assert it ({reason})"


async def test_assume_email_verified_is_only_for_a_missing_claim(person_idp: OidcProvider) -> None:
    """With ``assume_email_verified`` an email without the claim is taken; an explicit false still is not."""
    async with validator_for(person_idp, assume_email_verified=True) as validator:
        assert (await validator.validate(person_idp.token("silent"))).user == "sam@example.com"
        assert (await validator.validate(person_idp.token("stringy"))).user == "stringy@example.com"
        error = await refusal(validator, person_idp.token("unverified"))
    assert "email_verified is not true" in error.reason


async def test_verified_check_is_for_the_email_claim_only(person_idp: OidcProvider) -> None:
    """Another user claim is taken as the issuer's own (documented); it may not hold the reserved ':'."""
    claims = person_idp.claims(preferred_username="Al", email_verified=False)
    async with validator_for(person_idp, user_claim="preferred_username") as validator:
        assert (await validator.validate(person_idp.forge(claims))).user == "al"
        colon = person_idp.claims(preferred_username="sub:bob@x")
        error = await refusal(validator, person_idp.forge(colon))
    assert "holds ':'" in error.reason


async def test_fallback_claim_gives_a_qualified_name(person_idp: OidcProvider) -> None:
    """With ``fallback_claim: sub`` a token lacking email is named sub:<sub>@<issuer>, never a bare sub."""
    async with validator_for(person_idp, fallback_claim="sub") as validator:
        nameless = await validator.validate(person_idp.token("noemail"))
        admin_bare = await validator.validate(person_idp.token("admin"))
        admin_email = await validator.validate(person_idp.token("admin", scope="email"))
        still_refused = await refusal(validator, person_idp.token("unverified"))
    assert nameless.user == f"sub:noemail@{person_idp.issuer}"
    assert admin_bare.user == f"sub:admin@{person_idp.issuer}"
    assert admin_email.user == "admin@example.com"
    assert admin_bare.person == admin_email.person == (person_idp.issuer, "admin")
    assert admin_email.aliases == {f"sub:admin@{person_idp.issuer}"}  # the same person, seen under both names
    assert "email_verified" in still_refused.reason  # an unasserted email does not fall back either


def test_fallback_config_is_checked() -> None:
    """A fallback claim must be a plain claim name other than the user claim; issuers must not fold together."""
    with pytest.raises(ConfigError, match="fallback_claim"):
        IssuerConfig(issuer="https://idp.example.com", audience="a", fallback_claim="email")
    with pytest.raises(ConfigError, match="fallback_claim"):
        IssuerConfig(issuer="https://idp.example.com", audience="a", fallback_claim="s:ub")
    configs = [
        IssuerConfig(issuer=i, audience="a", fallback_claim="sub") for i in ("https://x.org/A", "https://x.org/a")
    ]
    with pytest.raises(ConfigError, match="letter case"):
        TokenValidator(configs, {c.issuer: object() for c in configs})  # type: ignore[misc] # refused before any key is used


# --- the person and their aliases ----------------------------------------------------------


async def test_a_changed_email_keeps_the_revocation_of_the_old_one(person_idp: OidcProvider, tmp_path: Path) -> None:
    """An email changed at the IdP: the new name is an alias of the old, so the old name's revocation applies.

    Grants stay with the name the token carries: a grant to the old name does not follow.
    """
    registry = SqliteAliasRegistry(tmp_path / "aliases.db")
    try:
        async with validator_for(person_idp, registry) as validator:
            old_token = person_idp.token("renamed")
            before = await validator.validate(old_token)
            person_idp.update_user("renamed", email="Ren.New@example.com", groups=["analysts"])
            after = await validator.validate(person_idp.token("renamed"))
            old_token_again = await validator.validate(old_token)  # still valid, served from the cache
    finally:
        person_idp.update_user("renamed", email="ren.old@example.com", groups=["analysts"])
        registry.close()
    assert (before.user, before.aliases) == ("ren.old@example.com", frozenset())
    assert (after.user, after.aliases) == ("ren.new@example.com", frozenset({"ren.old@example.com"}))
    assert old_token_again.aliases == {"ren.new@example.com"}  # the cached identity learned the new name
    revoking_old = policy(grants=(grant_for("user:ren.new@example.com"),), revoked=("user:ren.old@example.com",))
    assert [r.subject for r in active_revocations(after, revoking_old, NOW)] == ["user:ren.old@example.com"]
    assert effective_grants(after, revoking_old, NOW) == []
    assert effective_grants(after, policy(grants=(grant_for("user:ren.old@example.com"),)), NOW) == []


async def test_aliases_survive_a_restart(person_idp: OidcProvider, tmp_path: Path) -> None:
    """The registry is on disk: a new validator (a restart, another replica) knows the names seen before."""
    path = tmp_path / "aliases.db"
    first = SqliteAliasRegistry(path)
    await first.observe(person_idp.issuer, "bob", "robert@example.com")
    first.close()
    second = SqliteAliasRegistry(path)
    try:
        async with validator_for(person_idp, second) as validator:
            bob = await validator.validate(person_idp.token("bob"))
    finally:
        second.close()
    assert bob.aliases == {"robert@example.com"}
    assert "user:robert@example.com" in bob.revocation_subjects
    assert "user:robert@example.com" not in bob.subjects


async def test_an_unreadable_registry_fails_closed(person_idp: OidcProvider, tmp_path: Path) -> None:
    """If the names a person was seen with cannot be read, the token is not accepted (503, not a 500)."""
    registry = SqliteAliasRegistry(tmp_path / "aliases.db")
    registry.close()
    async with validator_for(person_idp, registry) as validator:
        with pytest.raises(IdentityUnavailable) as caught:
            await validator.validate(person_idp.token("bob"))
    assert (caught.value.status, caught.value.code) == (503, "identity_unavailable")
