"""Upstox market data through the official SDK: configuration, normalisation, the feed source,
the instrument master, the daily token, and a local fake Upstox server for tests and demos."""
