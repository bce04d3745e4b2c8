"""Strategies trading live on paper in long-lived Celery workers.

- `evaluation`: `LiveStrategy`, the in-memory evaluator (candles, engine, strategy, paper broker);
  pure Python, the backtest runner's code path.
- `worker`: `StrategyWorker`, the per-process glue around it: reads stream ranges from Redis,
  rebuilds state after a restart, stores signals/orders/fills/checkpoints through
  `strategies.services` in one transaction, and pushes updates to the dashboard.
"""
