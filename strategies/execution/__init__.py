"""Execution: charges, option contracts and premiums, the paper and Upstox brokers, the risk engine
(pure Python: no Django, Celery or Redis in charges, options, paper, risk, upstox, portfolio_stream),
and at the edge the Django side that stores and gates orders: trading states (models), the order
service (orders), reconciliation (reconcile), the kill switch (killswitch), admin and tasks."""
