"""The backtest pages in headless Chromium against a real Daphne and a real backtests worker: start a
run from the form, watch the progress bar reach 100% and the report render with its chart and a
trade's profile; start a long run and cancel it. Screenshots go to var/test-artifacts/."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.conftest import ARTIFACTS_DIR

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def log_in(page, site) -> None:
    username, password = site.user
    page.goto(site.server.url + "/backtests/new/")
    expect(page).to_have_url(re.compile(r"/accounts/login/\?next=/backtests/new/$"))
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name=re.compile("log in", re.I)).click()
    expect(page).to_have_url(site.server.url + "/backtests/new/")


def start_from_form(page, strategy: str, start: str, end: str, fill: str = "underlying", **params) -> None:
    page.select_option("#id_strategy", strategy)  # reloads the form with the strategy's parameters
    expect(page).to_have_url(re.compile(rf"strategy={strategy}"))
    page.select_option("#id_fill", fill)
    for name, value in params.items():
        page.fill(f"#id_param__{name}", value)
    page.fill("#id_start", start)
    page.fill("#id_end", end)
    page.click("#start-backtest")
    expect(page).to_have_url(re.compile(r"/backtests/\d+/$"))


def test_start_a_backtest_and_read_its_report(page, backtest_site):
    log_in(page, backtest_site)
    # a bad request first: the field error is shown and nothing starts
    page.fill("#id_start", "2024-03-31")
    page.fill("#id_end", "2024-03-01")
    page.click("#start-backtest")
    expect(page.locator("#end-error")).to_contain_text("ends before it starts")
    page.screenshot(path=str(ARTIFACTS_DIR / "backtest-form-error.png"), full_page=True)
    start_from_form(page, "ib_breakout", "2024-03-01", "2024-03-31", row_size="2.5")

    expect(page.locator("#progress-bar")).to_have_attribute("data-percent", "100", timeout=60_000)
    expect(page.locator("#run-state")).to_have_text("Done", timeout=30_000)
    expect(page.locator("#metrics")).to_contain_text("Net PnL (after costs)")
    expect(page.locator(".bt-facts")).to_contain_text("row_size=2.5")
    expect(page.locator("#equity-chart")).to_have_attribute("data-ready", "true")
    expect(page.locator("#equity-chart canvas").first).to_be_visible()
    expect(page.locator("#sessions tbody tr")).to_have_count(6)
    trades = page.locator("#trades tr[data-trade]")
    expect(trades.first).to_be_visible()
    trades.first.click()
    expect(page.locator("#profile")).to_contain_text("Profile at entry")
    expect(page.locator("#profile .bt-tpo__row.poc")).to_have_count(1)
    page.screenshot(path=str(ARTIFACTS_DIR / "backtest-report.png"), full_page=True)


def test_cancel_a_running_backtest(page, backtest_site):
    log_in(page, backtest_site)
    start_from_form(page, "eighty_percent", "2023-01-01", "2023-12-31")
    expect(page.locator("#run-state")).to_have_text("Running", timeout=60_000)
    expect(page.locator("#progress-text")).to_have_text(
        re.compile(r"^([1-9]\d*) / 120 sessions$"), timeout=30_000
    )
    expect(page.locator("#progress-eta")).to_contain_text(re.compile(r"about \d+.* left"))
    page.screenshot(path=str(ARTIFACTS_DIR / "backtest-running.png"), full_page=True)
    page.click("#cancel-run")
    expect(page.locator("#run-state")).to_have_text("Cancelled", timeout=30_000)
    expect(page.locator("#cancel-run")).to_have_count(0)
    done = int(page.locator("#progress-text").inner_text().split("/")[0])
    assert done < 120
    page.screenshot(path=str(ARTIFACTS_DIR / "backtest-cancelled.png"), full_page=True)


def test_compare_an_underlying_run_with_a_modelled_one(page, backtest_site):
    log_in(page, backtest_site)
    ids = []
    for fill in ("underlying", "modelled"):
        page.goto(backtest_site.server.url + "/backtests/new/")
        start_from_form(page, "ib_breakout", "2024-03-01", "2024-03-31", fill)
        expect(page.locator("#run-state")).to_have_text("Done", timeout=60_000)
        ids.append(page.url.rstrip("/").rsplit("/", 1)[-1])
    expect(page.locator(".bt-modelled")).to_contain_text("modelled")
    expect(page.locator("#trades")).to_contain_text("modelled")  # each option leg says so too
    page.screenshot(path=str(ARTIFACTS_DIR / "backtest-modelled-report.png"), full_page=True)
    page.goto(backtest_site.server.url + "/backtests/")
    for run_id in ids:
        page.check(f'input[name="run"][value="{run_id}"]')
    page.get_by_role("button", name="Compare two selected runs").click()
    expect(page.locator("#compare thead")).to_contain_text(f"Run {ids[0]}")
    expect(page.locator("#compare thead")).to_contain_text(f"Run {ids[1]}")
    expect(page.locator("#compare")).to_contain_text("modelled")
    expect(page.locator("#equity-chart")).to_have_attribute("data-ready", "true")
    page.screenshot(path=str(ARTIFACTS_DIR / "backtest-compare.png"), full_page=True)
