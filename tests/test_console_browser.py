"""The console's three journeys in a real browser: Debian's headless Chromium driven by selenium.

Against the real ``oidc-provider`` (its own login and consent pages, the
authorization code flow with PKCE) and a real MariaDB: an engineer signs in,
runs a query, downloads the CSV, asks for access; an admin approves it, and
the engineer's access changes (the new grant shows); the admin revokes the
engineer, whose next query is refused; an auditor filters the log, opens a
record, verifies the chain and exports; an engineer's UPDATE is held for review, a
reviewer sees it highlighted with its dry run's before/after rows and approves it, and
the engineer executes it (a gateway of its own on the review policy). On every console page the browser's
log must hold no error and no Content-Security-Policy violation, and a
screenshot of it is saved under ``tests/artifacts/console/`` (git-ignored).
One browser and one gateway for the module; switching person clears the
browser's cookies (the gateway's and the IdP's).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import RunningGateway, ScratchDatabase, gateway_settings, start_gateway, stop_gateway
from oidcfixture import OidcProvider
from reviewfixture import ledger, review_database
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from gateway import console

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = Path(__file__).parent / "artifacts" / "console"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--window-size=1366,900",
)
WAIT = 20.0


@pytest.fixture(scope="module")
def gw(
    tmp_path_factory: pytest.TempPathFactory, idp: OidcProvider, test_db: ScratchDatabase
) -> Iterator[RunningGateway]:
    """A gateway with the console whose people sign in at the real provider."""
    settings = gateway_settings(tmp_path_factory.mktemp("console-browser"), idp, test_db)
    running = start_gateway(settings, idp, test_db, pages=console.install)
    yield running
    stop_gateway(running)


REVIEW_POLICY = """\
version: 1
grants:
  - name: eng-write
    subjects: ["group:engineers"]
    target: shop
    access: write
    db_user: {writer}
    tables: {{allow: ["{db}.*"]}}
    review: {{writes: true, reviewers: ["group:db-admins"], min_approvals: 1, valid_for: 1h}}
"""


@pytest.fixture(scope="module")
def review_gw(tmp_path_factory: pytest.TempPathFactory, idp: OidcProvider) -> Iterator[RunningGateway]:
    """A console gateway whose engineers' writes wait for a db-admin's review, on a ledger of its own."""
    with review_database() as db:
        tmp = tmp_path_factory.mktemp("console-browser-review")
        settings = gateway_settings(tmp, idp, db, env_prefix="GWBROWSEREVIEW")
        policy = REVIEW_POLICY.format(db=db.name, writer=db.accounts["writer"].user)
        (tmp / "policies" / "policy.yaml").write_text(policy, encoding="utf-8")
        running = start_gateway(settings, idp, db, pages=console.install)
        yield running
        stop_gateway(running)


@pytest.fixture(scope="module")
def downloads(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the browser saves downloads."""
    return tmp_path_factory.mktemp("downloads")


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory, downloads: Path) -> Iterator[WebDriver]:
    """Headless Chromium from Debian's packages (``make test`` installs them), its console log kept."""
    if not CHROMIUM.exists() or not CHROMEDRIVER.exists():
        pytest.fail("chromium and chromium-driver are missing: `make test` installs them", pytrace=False)
    os.environ["SE_OFFLINE"] = "true"  # selenium must never try to download a browser or driver
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*FLAGS, f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    yield driver
    driver.quit()


def _wait(check: object, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not check():  # type: ignore[operator]  # any zero-argument predicate
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _clean_log(driver: WebDriver, gw: RunningGateway, refused: int | None = None) -> None:
    """No error and no CSP violation on our pages since the last look (the IdP's own pages are not ours).

    ``refused``: the page is a refusal with this status, which the browser logs as a failed load; the
    log is read until that entry is there (it can arrive after the page is complete), so it never
    lands in the next page's look.
    """
    expected = f"status of {refused}" if refused else None
    entries: list[dict[str, Any]] = []

    def read() -> bool:
        entries.extend(driver.get_log("browser"))  # type: ignore[no-untyped-call]  # selenium leaves get_log unannotated
        return expected is None or any(expected in entry["message"] for entry in entries)

    _wait(read, f"the browser's log of the {refused} refusal")
    problems = [
        entry["message"]
        for entry in entries
        if entry["level"] in {"SEVERE", "WARNING"}
        and (
            gw.url in entry["message"] or "Content Security Policy" in entry["message"] or entry["source"] == "security"
        )
        and not (expected and expected in entry["message"])
    ]
    assert not problems, problems


def visit(driver: WebDriver, gw: RunningGateway, path: str, shot: str) -> None:
    """Open a console page, check the browser's log, save its screenshot."""
    driver.get(gw.url + path)
    _wait(lambda: driver.execute_script("return document.readyState") == "complete", path)
    page(driver, gw, shot)


def page(driver: WebDriver, gw: RunningGateway, shot: str, refused: int | None = None) -> None:
    """The page the browser is on: checked and photographed."""
    assert driver.current_url.startswith(gw.url), driver.current_url
    _clean_log(driver, gw, refused)
    driver.save_screenshot(str(ARTIFACTS / f"{shot}.png"))


def sign_in(driver: WebDriver, gw: RunningGateway, account: str) -> None:
    """Sign in as ``account`` at the provider's own login and consent pages (fresh cookies first)."""
    driver.execute_cdp_cmd("Network.clearBrowserCookies", {})
    driver.get(gw.url + "/console/")
    _wait(lambda: "/interaction/" in driver.current_url, "the provider's login page")
    driver.find_element(By.NAME, "login").send_keys(account)
    driver.find_element(By.NAME, "password").send_keys("any")
    driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    _wait(lambda: "/interaction/" not in driver.current_url or _has(driver, "prompt", "consent"), "the consent page")
    if "/interaction/" in driver.current_url:
        driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    _wait(lambda: driver.current_url.startswith(gw.url + "/console/"), "the console")
    assert account in driver.find_element(By.CSS_SELECTOR, ".who .user").text


def _has(driver: WebDriver, name: str, value: str) -> bool:
    try:
        return driver.find_element(By.CSS_SELECTOR, f"input[name={name}][value={value}]") is not None
    except NoSuchElementException:
        return False


def _submit(driver: WebDriver, selector: str) -> None:
    driver.find_element(By.CSS_SELECTOR, selector).click()
    _wait(lambda: driver.execute_script("return document.readyState") == "complete", selector)


def _run(driver: WebDriver, sql: str) -> None:
    Select(driver.find_element(By.ID, "target")).select_by_value("shop")
    editor = driver.find_element(By.ID, "sql")
    editor.clear()
    editor.send_keys(sql)
    _submit(driver, "form.editor button:not([formaction])")


def test_engineer_and_admin_journeys(browser: WebDriver, gw: RunningGateway, downloads: Path) -> None:
    """Query, CSV, history and a request; the admin approves it (the grant shows) and revokes (queries refused)."""
    sign_in(browser, gw, "reader")
    page(browser, gw, "engineer-home")
    assert "analysts-read" in browser.page_source
    visit(browser, gw, "/console/query", "engineer-query")
    _run(browser, "SELECT id, name FROM items WHERE id <= 3 ORDER BY id")
    page(browser, gw, "engineer-result")
    assert len(browser.find_elements(By.CSS_SELECTOR, "table.rows tbody tr")) == 3
    _submit(browser, "button[formaction='/console/query.csv']")
    _wait(lambda: any(p.suffix == ".csv" for p in downloads.iterdir()), "the CSV download")
    csv_file = next(p for p in downloads.iterdir() if p.suffix == ".csv")
    _wait(lambda: csv_file.read_text().count("\n") >= 4, "the whole CSV")  # header and three rows
    assert csv_file.read_text().splitlines()[0] == "id,name"
    visit(browser, gw, "/console/history", "engineer-history")
    assert "FROM items" in browser.page_source
    visit(browser, gw, "/console/requests", "engineer-requests")
    Select(browser.find_element(By.ID, "r-access")).select_by_value("write")
    browser.find_element(By.ID, "r-duration").send_keys("2h")
    browser.find_element(By.ID, "r-reason").send_keys("INC-42: fix an order")
    _submit(browser, "form.grid button[type=submit]")
    page(browser, gw, "engineer-request-sent")
    found = re.search(r"Request <code>(ar-[0-9a-f]+)</code> sent", browser.page_source)
    assert found is not None
    request_id = found.group(1)

    sign_in(browser, gw, "admin")
    visit(browser, gw, "/console/admin/requests", "admin-approvals")
    _submit(browser, f"form[action='/console/admin/requests/{request_id}/approve'] button")
    page(browser, gw, "admin-approved")
    assert f"Request {request_id} approved" in browser.page_source
    visit(browser, gw, "/console/admin/policy", "admin-policy-by-target")
    assert request_id in browser.page_source
    visit(browser, gw, "/console/admin/policy?view=subject", "admin-policy-by-subject")
    visit(browser, gw, "/console/admin/history", "admin-policy-edits")

    sign_in(browser, gw, "reader")
    assert request_id in browser.page_source  # the approved, time-boxed grant is the engineer's now
    page(browser, gw, "engineer-after-approval")

    sign_in(browser, gw, "admin")
    visit(browser, gw, "/console/admin/policy", "admin-before-revoke")
    browser.find_element(By.ID, "v-subject").send_keys("user:reader@example.com")
    browser.find_element(By.ID, "v-reason").send_keys("INC-42 closed")
    _submit(browser, "form[action='/console/admin/revocations'] button")
    page(browser, gw, "admin-revoked")
    assert "Done: add_revocation" in browser.page_source or "Done:" in browser.page_source

    sign_in(browser, gw, "reader")
    visit(browser, gw, "/console/query?target=shop", "engineer-query-revoked")
    _run(browser, "SELECT id FROM items WHERE id = 1")
    page(browser, gw, "engineer-refused", refused=403)
    assert "revoked" in browser.find_element(By.CSS_SELECTOR, ".alert").text


def test_auditor_journey(browser: WebDriver, gw: RunningGateway, downloads: Path) -> None:
    """Filter the log, open a record in its chain, see charts, verify with progress and export the filter."""
    sign_in(browser, gw, "admin")  # the test policies make admin@example.com an auditor too
    visit(browser, gw, "/console/query", "auditor-query")
    _run(browser, "SELECT 1; SELECT 2")  # refused: a denial for the auditor to find
    page(browser, gw, "auditor-refused-query", refused=400)
    visit(browser, gw, "/console/audit", "auditor-log")
    Select(browser.find_element(By.ID, "f-decision")).select_by_value("deny")
    browser.find_element(By.ID, "f-user").send_keys("admin@example.com")
    _submit(browser, "form.filters button[type=submit]")
    page(browser, gw, "auditor-log-filtered")
    rows = browser.find_elements(By.CSS_SELECTOR, "main table tbody tr")
    assert rows
    assert all("deny" in row.text for row in rows)
    rows[0].find_element(By.CSS_SELECTOR, "a").click()
    page(browser, gw, "auditor-record")
    assert "matches the record" in browser.page_source
    visit(browser, gw, "/console/audit/charts", "auditor-charts")
    assert browser.find_elements(By.CSS_SELECTOR, "svg.chart")
    visit(browser, gw, "/console/audit/verify", "auditor-verify")
    _submit(browser, "main form button[type=submit]")
    _wait(lambda: "The chain is intact" in browser.page_source, "the verification")
    page(browser, gw, "auditor-verified")
    before = set(downloads.iterdir())
    visit(browser, gw, "/console/audit?decision=deny", "auditor-export")
    browser.find_element(By.LINK_TEXT, "Export CSV").click()
    _wait(
        lambda: any(p.name.startswith("audit-") and p.suffix == ".csv" for p in set(downloads.iterdir()) - before),
        "the export",
    )
    export = next(p for p in set(downloads.iterdir()) - before if p.suffix == ".csv")
    _wait(lambda: export.read_text().startswith("seq,time,event"), "the export's header")


def test_review_journey(browser: WebDriver, review_gw: RunningGateway) -> None:
    """An engineer's UPDATE is held; a reviewer sees it highlighted with its sample diff and approves; she executes."""
    gw, db = review_gw, review_gw.db
    before = ledger(db)
    sign_in(browser, gw, "writer")
    visit(browser, gw, "/console/query", "review-engineer-query")
    _run(browser, "UPDATE ledger SET amount = amount + 5 WHERE id <= 2 ORDER BY id")
    page(browser, gw, "review-engineer-held")
    found = re.search(r"review (rv-[0-9a-f]{16}) was requested", browser.page_source)
    assert found is not None, browser.page_source
    review = found.group(1)
    assert ledger(db) == before

    sign_in(browser, gw, "admin")
    visit(browser, gw, "/console/reviews", "review-reviewer")
    assert review in browser.page_source
    assert browser.find_elements(By.CSS_SELECTOR, "pre.sql span.k")  # highlighted: keywords have their class
    changed = [cell.text for cell in browser.find_elements(By.CSS_SELECTOR, "table.sample td.changed")]
    assert changed == [str(before[1]), str(before[1] + 5), str(before[2]), str(before[2] + 5)]
    _submit(browser, f"form[action='/console/reviews/{review}/approve'] button")
    page(browser, gw, "review-approved")
    assert f"Review {review} approved" in browser.page_source

    sign_in(browser, gw, "writer")
    visit(browser, gw, "/console/reviews", "review-author-approved")
    _submit(browser, f"form[action='/console/reviews/{review}/execute'] button")
    page(browser, gw, "review-executed")
    assert f"Review {review} executed" in browser.page_source
    assert ledger(db) == {**before, 1: before[1] + 5, 2: before[2] + 5}
