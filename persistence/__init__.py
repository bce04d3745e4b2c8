"""The history store: DuckDB/Parquet schema, the feed's batched writer, readers for every other process."""
