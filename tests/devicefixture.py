"""Approving a device-flow login the way a person would, through the provider's own pages.

oidc-provider's ``devInteractions`` serve plain HTML forms: the user-code
confirmation, then the login form (any password; the login is the account
id), then the consent form. ``approve`` follows ``verification_uri_complete``
and submits each form with httpx, keeping the provider's cookies.
"""

from __future__ import annotations

import html
import re
from urllib.parse import urljoin

import httpx

FORM = re.compile(r"<form\b([^>]*)>(.*?)</form>", re.DOTALL | re.IGNORECASE)
INPUT = re.compile(r"<input\b([^>]*?)/?>", re.DOTALL | re.IGNORECASE)
ATTR = re.compile(r'([a-zA-Z_:-]+)="([^"]*)"')
MAX_FORMS = 6  # user code, login, consent, with room to spare
SUCCESS = "Sign-in Success"


def _form(page: str) -> tuple[str, dict[str, str]]:
    match = FORM.search(page)
    if match is None:
        raise AssertionError(f"no form on the provider's page:\n{page[:2000]}")
    action = dict(ATTR.findall(match.group(1))).get("action", "")
    fields: dict[str, str] = {}
    for attrs in INPUT.findall(match.group(2)):
        values = dict(ATTR.findall(attrs))
        if "name" in values:
            fields[values["name"]] = html.unescape(values.get("value", ""))
    return html.unescape(action), fields


def approve(verification_uri_complete: str, account: str) -> None:
    """Confirm the code, sign in as ``account`` and consent, as the user would in a browser."""
    with httpx.Client(follow_redirects=True, timeout=10) as browser:
        page = browser.get(verification_uri_complete)
        for _ in range(MAX_FORMS):
            page.raise_for_status()
            if SUCCESS in page.text:
                return
            action, fields = _form(page.text)
            if "login" in fields or fields.get("prompt") == "login":
                fields.update(login=account, password="any")
            page = browser.post(urljoin(str(page.url), action), data=fields)
    raise AssertionError(f"the provider never showed {SUCCESS!r}:\n{page.text[:2000]}")
