"""Loading the Upstox instrument master and selecting contracts from it."""

from __future__ import annotations

import gzip
import io
import json
from datetime import date

import pytest
from django.core.management import call_command

from feeds import contracts
from feeds.models import Instrument
from feeds.tasks import refresh_instruments
from feeds.universe import generate_master
from feeds.upstox import instruments
from feeds.upstox.fake import FakeUpstox
from feeds.upstox.fake.testing import point_settings_at
from feeds.upstox.source import load_plan

DAY = date(2026, 11, 20)  # a Friday
NIFTY = "NSE_INDEX|Nifty 50"
BANK = "NSE_INDEX|Nifty Bank"


@pytest.fixture
def master_file(tmp_path):
    rows = generate_master(DAY, strikes_each_side=4)
    rows.append({"segment": "NSE_EQ", "instrument_key": "NSE_EQ|INE002A01018", "instrument_type": "EQ"})
    path = tmp_path / "NSE.json.gz"
    path.write_bytes(gzip.compress(json.dumps(rows).encode()))
    return path, rows


@pytest.mark.django_db
def test_loadinstruments_from_a_file(master_file):
    path, rows = master_file
    out = io.StringIO()
    call_command("loadinstruments", str(path), stdout=out)
    assert f"loaded {len(rows) - 1} instruments (1 rows" in out.getvalue()
    nifty = Instrument.objects.get(instrument_key=NIFTY)
    assert nifty.instrument_type == "INDEX" and nifty.underlying_key == NIFTY
    option = Instrument.objects.filter(instrument_type="CE", underlying_key=NIFTY).first()
    assert option.strike is not None and option.expiry >= DAY and str(option.tick_size) == "0.05"
    assert option.lot_size == contracts.lot_size("NIFTY", option.expiry)
    # Loading again replaces, never duplicates.
    call_command("loadinstruments", str(path), stdout=io.StringIO())
    assert Instrument.objects.count() == len(rows) - 1


@pytest.mark.django_db
def test_loadinstruments_from_the_fake_url_and_the_beat_task(settings):
    with FakeUpstox(on_date=DAY) as fake:
        point_settings_at(settings, fake)
        call_command("loadinstruments", fake.master_url, stdout=io.StringIO())
        count = Instrument.objects.count()
        assert count > 100
        Instrument.objects.all().delete()
        settings.FEED_SOURCE = "sim"
        assert refresh_instruments.apply().get()["not_in_use"]  # no token, not the feed: no download
        assert fake.rest_requests.count(("GET", "/market-quote/instruments/exchange/NSE.json.gz")) == 1
        settings.FEED_SOURCE = "upstox"
        assert refresh_instruments.apply().get() == {"loaded": count, "skipped": 0}  # default: the setting
    point_settings_at(settings, None)


@pytest.mark.django_db
def test_selectors_pick_the_nearest_weekly_for_nifty_and_the_monthly_for_bank(master_file):
    path, _ = master_file
    instruments.load_instruments(str(path))
    nifty_weekly = instruments.option_contracts(NIFTY, DAY, weekly=True)
    bank_monthly = instruments.option_contracts(BANK, DAY, weekly=False)
    assert {o.expiry for o in nifty_weekly} == {contracts.nearest_expiry("NIFTY", DAY, weekly=True)}
    assert {o.expiry for o in bank_monthly} == {contracts.nearest_expiry("BANKNIFTY", DAY, weekly=False)}
    assert len(nifty_weekly) == 2 * 9  # ±4 strikes, CE and PE
    future = Instrument.objects.get(instrument_key=instruments.near_month_future(NIFTY, DAY))
    assert (
        future.instrument_type == "FUT"
        and future.expiry == contracts.expiries("NIFTY", DAY, contracts.MONTHLY)[0]
    )

    plan = load_plan([NIFTY, BANK], DAY, strikes_each_side=2)
    assert set(plan.fixed) == {NIFTY, BANK, future.instrument_key, instruments.near_month_future(BANK, DAY)}
    assert set(plan.fixed.values()) == {"full"}
    ladder = plan.ladders[NIFTY]
    assert ladder.recentre(25_010) and len(ladder.keys()) == 2 * 5


@pytest.mark.django_db
def test_a_broken_master_is_a_command_error(tmp_path):
    from django.core.management.base import CommandError

    path = tmp_path / "bad.json.gz"
    path.write_bytes(gzip.compress(b'{"not": "a list"}'))
    with pytest.raises(CommandError):
        call_command("loadinstruments", str(path))
