"""The history store: ticks, 1-minute candles, depth snapshots and daily profile summaries as Parquet
files partitioned by IST session day under settings.HISTORY_DIR.

* `persistence.writer.HistoryWriter` — the one writer (the feed, or `manage.py importhistory`).
* `persistence.readers` — read_ticks, read_candles_1m, read_depth, read_profile_summaries,
  session_days, instruments; safe from any process at any time, never blocked by the writer.
* `persistence.importing` — CSV/Parquet imports behind `manage.py importhistory`.
* `persistence.store` — the on-disk layout and manifest both sides share.
"""
