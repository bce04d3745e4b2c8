"""Backtests: the pure runner (same strategy classes, auction engine, PaperBroker and charges as the
live worker), candle loading and performance metrics. No Django, Celery or Redis in this package;
the management command and the backtest tasks are thin callers."""
