"""The generated instrument master (feeds.universe)."""

from datetime import date

from feeds import contracts, universe

FIELDS = {
    "segment", "exchange", "name", "trading_symbol", "instrument_key", "exchange_token",
    "instrument_type", "strike_price", "expiry", "lot_size", "tick_size", "freeze_quantity",
    "underlying_symbol", "underlying_key", "weekly",
}  # fmt: skip


def test_master_shape_and_unique_keys():
    master = universe.generate_master(date(2025, 12, 1), spot={"Nifty 50": 26_010, "BANKNIFTY": 59_420})
    keys = [r["instrument_key"] for r in master]
    assert len(keys) == len(set(keys))
    assert all(FIELDS <= set(r) for r in master)
    assert {r["instrument_type"] for r in master} == {"INDEX", "FUT", "CE", "PE"}
    fo = [r for r in master if r["segment"] == "NSE_FO"]
    assert all(r["instrument_key"] == f"NSE_FO|{r['exchange_token']}" for r in fo)
    assert all(r["exchange_token"].isdigit() for r in master)
    # Futures: near and next month for each index, lot sizes by expiry (Jan 2026 -> 65 / 30).
    futs = {
        (r["underlying_symbol"], universe.expiry_date(r)): r["lot_size"]
        for r in fo
        if r["instrument_type"] == "FUT"
    }
    assert futs == {
        ("NIFTY", date(2025, 12, 30)): 75,
        ("NIFTY", date(2026, 1, 27)): 65,
        ("BANKNIFTY", date(2025, 12, 30)): 35,
        ("BANKNIFTY", date(2026, 1, 27)): 30,
    }
    # Options centre on the given spot; Bank Nifty has no weeklies.
    nifty_weekly = {universe.expiry_date(r) for r in fo if r["name"] == "NIFTY" and r["weekly"]}
    assert nifty_weekly == set(contracts.expiries("NIFTY", date(2025, 12, 1), "weekly"))
    assert not any(r["weekly"] for r in fo if r["name"] == "BANKNIFTY")
    strikes = sorted({r["strike_price"] for r in fo if r["name"] == "NIFTY" and r["instrument_type"] == "CE"})
    assert strikes[len(strikes) // 2] == 26_000.0
    assert all(b - a == 50 for a, b in zip(strikes, strikes[1:], strict=False))


def test_tokens_are_stable_across_days():
    a = universe.by_key(universe.generate_master(date(2025, 12, 1)))
    b = universe.by_key(universe.generate_master(date(2025, 12, 2)))
    common = set(a) & set(b)
    assert len(common) > 500
    assert all(a[k]["trading_symbol"] == b[k]["trading_symbol"] for k in common)
    assert universe.near_future(list(a.values()), "NIFTY")["trading_symbol"] == "NIFTY FUT 30 DEC 25"
