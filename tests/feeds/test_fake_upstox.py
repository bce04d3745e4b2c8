"""The fake Upstox server answers the real SDK's REST calls and streams in Upstox's shapes."""

from __future__ import annotations

import gzip
import json
import threading
import urllib.request
from datetime import date, datetime, timedelta

import pytest
import upstox_client
from upstox_client.rest import ApiException

from feeds.ticks import IST
from feeds.upstox import client
from feeds.upstox.fake import FakeUpstox
from feeds.upstox.fake.server import session_status_at
from feeds.upstox.fake.testing import point_settings_at

NIFTY = "NSE_INDEX|Nifty 50"


@pytest.fixture
def fake(settings):
    with FakeUpstox(accepted_tokens={"good-token"}, on_date=date(2026, 11, 20)) as server:
        point_settings_at(settings, server)
        yield server
    point_settings_at(settings, None)


@pytest.fixture
def api(fake):
    api = client.api_client("good-token")
    yield api
    client.close_api_client(api)


def error_code(exc: ApiException) -> str:
    return json.loads(exc.body)["errors"][0]["errorCode"]


def test_configuration_points_rest_and_orders_at_the_fake(fake, api):
    assert api.configuration.host == fake.api_url
    assert api.configuration.order_host == fake.api_url
    assert upstox_client.Configuration().host == fake.api_url  # the pseudo-singleton follows too


def test_ws_url_rewrite_only_touches_the_upstox_prefix():
    assert (
        client.rewrite_ws_url("wss://api.upstox.com/v3/feed/x", "ws://127.0.0.1:5")
        == "ws://127.0.0.1:5/v3/feed/x"
    )
    assert (
        client.rewrite_ws_url("wss://api.upstox.com/v3/feed/x", "wss://api.upstox.com")
        == "wss://api.upstox.com/v3/feed/x"
    )
    assert client.rewrite_ws_url("wss://elsewhere/x", "ws://127.0.0.1:5") == "wss://elsewhere/x"


def test_feed_authorize_answers_both_key_spellings(fake, api):
    response = upstox_client.WebsocketApi(api).get_market_data_feed_authorize_v3()
    assert response.data.authorized_redirect_uri == f"{fake.ws_url}/v3/feed/market-data-feed"
    raw = urllib.request.urlopen(
        urllib.request.Request(
            fake.api_url + "/v3/feed/market-data-feed/authorize",
            headers={"Authorization": "Bearer good-token"},
        )
    )
    data = json.loads(raw.read())["data"]
    assert data["authorized_redirect_uri"] == data["authorizedRedirectUri"]


def test_place_modify_cancel_and_the_order_book(fake, api):
    orders = upstox_client.OrderApiV3(api)
    placed = orders.place_order(
        upstox_client.PlaceOrderV3Request(
            quantity=75,
            product="I",
            validity="DAY",
            price=101.5,
            tag="bot-123",
            instrument_token="NSE_FO|43919",
            order_type="LIMIT",
            transaction_type="BUY",
            disclosed_quantity=0,
            trigger_price=0,
            is_amo=False,
            slice=False,
        )
    )
    order_id = placed.data.order_ids[0]
    book = upstox_client.OrderApi(api).get_order_book(client.API_VERSION).data
    assert [(o.order_id, o.status, o.tag, o.pending_quantity) for o in book] == [
        (order_id, "open", "bot-123", 75)
    ]

    orders.modify_order(
        upstox_client.ModifyOrderRequest(
            order_id=order_id, quantity=150, validity="DAY", price=102.0, order_type="LIMIT", trigger_price=0
        )
    )
    orders.cancel_order(order_id)
    (order,) = upstox_client.OrderApi(api).get_order_book(client.API_VERSION).data
    assert (order.status, order.quantity, order.price) == ("cancelled", 150, 102.0)
    assert [r["action"] for r in fake.orders.requests] == ["place", "modify", "cancel"]

    with pytest.raises(ApiException) as err:
        orders.cancel_order(order_id)
    assert err.value.status == 400 and error_code(err.value) == "UDAPI100040"


def test_market_orders_fill_into_positions_and_funds(fake, api):
    orders = upstox_client.OrderApiV3(api)
    for side in ("BUY", "SELL"):
        orders.place_order(
            upstox_client.PlaceOrderV3Request(
                quantity=65,
                product="I",
                validity="DAY",
                price=0,
                instrument_token=NIFTY.replace("INDEX", "FO") + "1",
                order_type="MARKET",
                transaction_type=side,
                disclosed_quantity=0,
                trigger_price=0,
                is_amo=False,
                slice=False,
            )
        )
    (position,) = upstox_client.PortfolioApi(api).get_positions(client.API_VERSION).data
    assert position.quantity == 0 and position.day_buy_quantity == position.day_sell_quantity == 65
    funds = upstox_client.UserApi(api).get_user_fund_margin(client.API_VERSION).data
    assert funds["equity"].available_margin < 1_000_000


def test_a_rejected_token_gets_upstox_error_envelope(fake):
    api = client.api_client("wrong")
    try:
        with pytest.raises(ApiException) as err:
            upstox_client.OrderApi(api).get_order_book(client.API_VERSION)
    finally:
        client.close_api_client(api)
    assert err.value.status == 401
    body = json.loads(err.value.body)
    assert body["status"] == "error" and body["errors"][0]["errorCode"] == "UDAPI100050"


def test_rate_limit_answers_429(fake, api):
    fake.rest_rate_per_s = 3
    statuses = []
    for _ in range(6):
        try:
            upstox_client.OrderApi(api).get_order_book(client.API_VERSION)
            statuses.append(200)
        except ApiException as e:
            statuses.append(e.status)
            assert error_code(e) == "UDAPI10005"
    assert statuses[:3] == [200, 200, 200] and 429 in statuses


def test_historical_candles_newest_first_and_a_month_at_most(fake, api):
    history = upstox_client.HistoryV3Api(api)
    rows = history.get_historical_candle_data1(NIFTY, "minutes", 1, "2026-11-20", "2026-11-19").data.candles
    assert len(rows) == 2 * 375
    assert rows[0][0] == "2026-11-20T15:29:00+05:30" and rows[-1][0] == "2026-11-19T09:15:00+05:30"
    o, h, low, c = rows[0][1:5]
    assert low <= min(o, c) <= max(o, c) <= h and rows[0][5] == 0  # an index has no volume
    again = history.get_historical_candle_data1(NIFTY, "minutes", 1, "2026-11-20", "2026-11-19").data.candles
    assert again == rows  # deterministic
    with pytest.raises(ApiException) as err:
        history.get_historical_candle_data1(NIFTY, "minutes", 1, "2026-11-20", "2026-09-01")
    assert err.value.status == 400


def test_intraday_candles_follow_the_session_clock(settings):
    at = datetime(2026, 11, 20, 10, 0, tzinfo=IST)
    with FakeUpstox(session_clock=lambda: at) as fake:
        point_settings_at(settings, fake)
        api = client.api_client("any")
        rows = upstox_client.HistoryV3Api(api).get_intra_day_candle_data(NIFTY, "minutes", 1).data.candles
        client.close_api_client(api)
    assert len(rows) == 45 and rows[0][0] == "2026-11-20T09:59:00+05:30"


def test_the_instrument_master_is_a_gzipped_upstox_list(fake):
    rows = json.loads(gzip.decompress(urllib.request.urlopen(fake.master_url).read()))
    kinds = {r["instrument_type"] for r in rows}
    assert {"INDEX", "FUT", "CE", "PE"} <= kinds
    assert any(r["weekly"] for r in rows) and any(
        not r["weekly"] and r["instrument_type"] == "CE" for r in rows
    )


def test_portfolio_stream_pushes_order_updates_through_the_sdk(fake, api):
    received: list[str] = []
    got = threading.Event()
    streamer = upstox_client.PortfolioDataStreamer(api, order_update=True)
    streamer.auto_reconnect(False)
    streamer.on("message", lambda m: (received.append(m), got.set()))
    opened = threading.Event()
    streamer.on("open", opened.set)
    streamer.connect()
    try:
        assert opened.wait(10)
        upstox_client.OrderApiV3(api).place_order(
            upstox_client.PlaceOrderV3Request(
                quantity=30,
                product="I",
                validity="DAY",
                price=10,
                instrument_token="NSE_FO|1",
                order_type="LIMIT",
                transaction_type="BUY",
                disclosed_quantity=0,
                trigger_price=0,
                is_amo=False,
                slice=False,
                tag="t1",
            )
        )
        assert got.wait(10)
    finally:
        streamer.disconnect()
    update = json.loads(received[0])
    assert update["update_type"] == "order" and update["status"] == "open" and update["tag"] == "t1"


def test_simulated_session_status_by_clock():
    day = datetime(2026, 11, 24, tzinfo=IST)
    assert session_status_at(day + timedelta(hours=9, minutes=1)) == "PRE_OPEN_START"
    assert session_status_at(day + timedelta(hours=9, minutes=10)) == "PRE_OPEN_END"
    assert session_status_at(day + timedelta(hours=9, minutes=15)) == "NORMAL_OPEN"
    assert session_status_at(day + timedelta(hours=15, minutes=30)) == "NORMAL_CLOSE"


def test_fakeupstox_command_serves_until_signalled(tmp_path):
    import os
    import signal
    import socket
    import subprocess
    import sys
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, LOG_LEVEL="WARNING")
    proc = subprocess.Popen(
        [
            sys.executable,
            "manage.py",
            "fakeupstox",
            "--port",
            str(port),
            "--ws-port",
            "0",
            "--session",
            "sim",
            "--date",
            "2026-11-24",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        line = proc.stdout.readline()
        assert f"UPSTOX_API_URL=http://127.0.0.1:{port}" in line
        deadline = time.monotonic() + 10
        while True:
            try:
                data = urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/market-quote/instruments/exchange/NSE.json.gz"
                ).read()
                break
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert json.loads(gzip.decompress(data))
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0


def test_option_contracts_and_chain_from_the_master(fake, api):
    options = upstox_client.OptionsApi(api)
    contracts_ = options.get_option_contracts(NIFTY).data
    assert contracts_ and {c.instrument_type for c in contracts_} == {"CE", "PE"}
    expiry = min(c.expiry for c in contracts_)  # the SDK parses it into a datetime
    chain = options.get_put_call_option_chain(NIFTY, f"{expiry:%Y-%m-%d}").data
    assert chain and all(row.call_options and row.put_options for row in chain)
    strikes = [row.strike_price for row in chain]
    assert strikes == sorted(strikes) and len(strikes) == len(
        {c.strike_price for c in contracts_ if c.expiry == expiry}
    )
    call = chain[len(chain) // 2].call_options
    assert call.market_data.ltp > 0 and call.market_data.ask_price > call.market_data.bid_price
