"""Backtests started from the web: stored runs and sweeps, the Celery tasks that execute them with the
same pure runner as `manage.py backtest`, live progress over Channels, and the report pages.

Celery's autodiscovery imports only `<app>.tasks`; this package's tasks register when its models
load (strategies/models.py imports them), so every worker started with `-A auctionsite` knows them.
"""
