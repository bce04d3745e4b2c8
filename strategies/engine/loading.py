"""Adapters from columnar market data (Parquet/CSV files, Arrow tables) to the engine's `Candles`
and `Ticks`. The only module of the engine that touches duckdb/pyarrow (imported lazily, so the
engine itself stays importable without them). Never imports Django, Celery or Redis.

Accepted shapes (as in /work/shared/data):
  candles: instrument_key, ts, open, high, low, close[, volume]   (ts = candle start)
  ticks:   instrument_key, ts, ltp[, qty]                          (qty may also be named ltq)
`ts` may be a timestamp with time zone, a naive timestamp (read as Asia/Kolkata wall time), or
integer ms since the epoch.
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path
from typing import Any

from .batch import Candles, Ticks
from .params import IST_OFFSET_MS, day_start_ms

CANDLE_COLUMNS = ("instrument_key", "ts", "open", "high", "low", "close")
TICK_COLUMNS = ("instrument_key", "ts", "ltp")


class MarketDataError(ValueError):
    """The input cannot be read as candles or ticks (one line, for the user)."""


def _relation(con, path: Path):
    suffix = path.suffix.lower()
    if not path.exists():
        raise MarketDataError(f"no such file: {path}")
    try:
        if suffix in (".parquet", ".pq"):
            return con.read_parquet(str(path))
        if suffix in (".csv", ".txt", ".gz"):
            return con.read_csv(str(path))
    except Exception as exc:  # duckdb raises many kinds; the user needs one line
        raise MarketDataError(f"cannot read {path.name}: {str(exc).splitlines()[0]}") from exc
    raise MarketDataError(f"unsupported input {path.name}: use .parquet or .csv")


def _ts_ms_sql(type_name: str) -> str:
    t = type_name.upper()
    if "WITH TIME ZONE" in t or t == "TIMESTAMPTZ":
        return "epoch_ms(ts)"
    if t.startswith("TIMESTAMP") or t == "DATE":
        return f"(epoch_ms(ts::TIMESTAMP) - {IST_OFFSET_MS})"  # naive wall time in IST
    if t in ("BIGINT", "INTEGER", "HUGEINT", "UBIGINT"):
        return "ts::BIGINT"
    return "epoch_ms(ts::TIMESTAMPTZ)"


def load_file(
    path: str | Path, instrument_key: str, start: date | None = None, end: date | None = None
) -> Candles | Ticks:
    """One instrument's candles or ticks from a Parquet/CSV file, in time order, optionally only the
    IST days start..end."""
    import duckdb

    con = duckdb.connect()
    try:
        rel = _relation(con, Path(path))
        columns = [c.lower() for c in rel.columns]
        types = dict(zip(columns, [str(t) for t in rel.types], strict=True))
        is_candles = all(c in columns for c in CANDLE_COLUMNS)
        is_ticks = all(c in columns for c in TICK_COLUMNS)
        if not (is_candles or is_ticks):
            raise MarketDataError(
                f"{Path(path).name} has columns {', '.join(columns)}; expected "
                f"{', '.join(CANDLE_COLUMNS)}[, volume] or {', '.join(TICK_COLUMNS)}[, qty]"
            )
        where = ["instrument_key = $key"]
        params: dict[str, Any] = {"key": instrument_key}
        ts_sql = _ts_ms_sql(types["ts"])
        if start is not None:
            where.append(f"{ts_sql} >= $lo")
            params["lo"] = day_start_ms(start)
        if end is not None:
            where.append(f"{ts_sql} < $hi")
            params["hi"] = day_start_ms(end + timedelta(days=1))
        if is_candles:
            vol = "COALESCE(volume, 0)::BIGINT" if "volume" in columns else "0::BIGINT"
            select = (
                f"{ts_sql} AS ts_ms, open::DOUBLE AS open, high::DOUBLE AS high, low::DOUBLE AS low, "
                f"close::DOUBLE AS close, {vol} AS volume"
            )
        else:
            qty_col = "qty" if "qty" in columns else "ltq" if "ltq" in columns else None
            qty = f"COALESCE({qty_col}, 0)::BIGINT" if qty_col else "NULL::BIGINT"
            select = f"{ts_sql} AS ts_ms, ltp::DOUBLE AS price, {qty} AS qty"
        con.register("market", rel)
        sql = f"SELECT {select} FROM market WHERE {' AND '.join(where)} ORDER BY ts_ms"
        try:
            table = con.sql(sql, params=params).to_arrow_table()
        except Exception as exc:
            raise MarketDataError(f"cannot read {Path(path).name}: {str(exc).splitlines()[0]}") from exc
    finally:
        con.close()
    cols = {name: table.column(name).to_pylist() for name in table.column_names}
    if is_candles:
        volume = cols["volume"] if any(cols["volume"]) else None
        return Candles(cols["ts_ms"], cols["open"], cols["high"], cols["low"], cols["close"], volume)
    qty = cols["qty"] if cols["qty"] and cols["qty"][0] is not None else None
    return Ticks(cols["ts_ms"], cols["price"], qty)


def candles_from_arrow(table) -> Candles:
    """Candles from an Arrow table with ts (timestamp) or ts_ms, open, high, low, close[, volume]."""
    import pyarrow as pa

    names = set(table.column_names)
    missing = {"open", "high", "low", "close"} - names
    if missing or not ({"ts", "ts_ms"} & names):
        raise MarketDataError(f"candles need ts, open, high, low, close; missing {sorted(missing) or ['ts']}")
    table = table.sort_by("ts_ms" if "ts_ms" in names else "ts")
    if "ts_ms" in names:
        ts = table.column("ts_ms").to_pylist()
    else:
        col = table.column("ts").cast(pa.timestamp("ms", tz="UTC"))
        ts = col.cast(pa.int64()).to_pylist()
    volume = None
    if "volume" in names:
        vols = [v or 0 for v in table.column("volume").to_pylist()]
        volume = vols if any(vols) else None
    return Candles(
        ts,
        table.column("open").to_pylist(),
        table.column("high").to_pylist(),
        table.column("low").to_pylist(),
        table.column("close").to_pylist(),
        volume,
    )


def shared_data_dir(project_root: str | Path) -> Path:
    """Where the shared real-market files live relative to the project root (may not exist)."""
    return Path(project_root).resolve().parent / "shared" / "data"


def session_days(data: Candles | Ticks) -> list[date]:
    from .batch import split_sessions
    from .params import session_date_of

    return [session_date_of(part.ts_ms[0]) for part in split_sessions(data)]
