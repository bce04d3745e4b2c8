"""The simulated sessions against real Nifty data (/work/shared/data; skipped when absent).

Loose bands, not a fit: the simulator should produce the same kind of days as the real index
(how often the range extends past the IB, how wide days are, how noisy a second is)."""

from datetime import date, timedelta
from pathlib import Path

import duckdb
import pytest

from feeds import contracts, sim

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
CANDLES = DATA / "nifty50_1m_2024-01_2024-04.parquet"
SECONDS = DATA / "nifty50_ticks_1s_2022-08_2022-10.parquet"


def _sim_days(n: int) -> list[tuple[float, float, float, float]]:
    out, d = [], date(2025, 1, 1)
    while len(out) < n:
        if contracts.is_trading_day(d):
            path = sim.index_path("NIFTY", d)
            ib = path[: sim.IB_SECONDS]
            out.append((max(path), min(path), max(ib), min(ib), path[0]))
        d += timedelta(days=1)
    return out


@pytest.mark.skipif(not CANDLES.exists(), reason=f"real data not found at {CANDLES}")
def test_day_shapes_resemble_real_nifty():
    real = duckdb.sql(
        f"""
        WITH b AS (SELECT (ts AT TIME ZONE 'Asia/Kolkata') AS t, * FROM '{CANDLES}'),
        d AS (SELECT t::DATE AS dd, max(high) AS h, min(low) AS l, arg_min(open, t) AS o,
                     max(high) FILTER (WHERE t::TIME < '10:15') AS ibh,
                     min(low) FILTER (WHERE t::TIME < '10:15') AS ibl
              FROM b GROUP BY 1)
        SELECT h, l, ibh, ibl, o FROM d
        """
    ).fetchall()
    simulated = _sim_days(77)

    def stats(days):
        n = len(days)
        return {
            "ext15": sum((hi - lo) > 1.5 * (ibh - ibl) for hi, lo, ibh, ibl, _ in days) / n,
            "ratio": sum((hi - lo) / (ibh - ibl) for hi, lo, ibh, ibl, _ in days) / n,
            "range_pct": sum((hi - lo) / o for hi, lo, _, _, o in days) / n,
        }

    r, s = stats(real), stats(simulated)
    assert abs(r["ext15"] - s["ext15"]) < 0.25, (r, s)
    assert 0.7 < s["ratio"] / r["ratio"] < 1.4, (r, s)
    assert 0.6 < s["range_pct"] / r["range_pct"] < 1.6, (r, s)


@pytest.mark.skipif(not SECONDS.exists(), reason=f"real data not found at {SECONDS}")
def test_one_second_noise_resembles_real_nifty():
    ((real,),) = duckdb.sql(
        f"""
        WITH t AS (SELECT ltp, ltp - lag(ltp) OVER (PARTITION BY ts::DATE ORDER BY ts) AS d FROM '{SECONDS}')
        SELECT stddev(d / ltp) FROM t WHERE d IS NOT NULL
        """
    ).fetchall()
    path = sim.index_path("NIFTY", date(2025, 12, 1))
    diffs = [(b - a) / a for a, b in zip(path, path[1:], strict=False)]
    mean = sum(diffs) / len(diffs)
    simulated = (sum((x - mean) ** 2 for x in diffs) / len(diffs)) ** 0.5
    assert 0.5 < simulated / real < 2.0, (simulated, real)
