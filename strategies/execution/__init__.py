"""Execution: charges, option contract selection and premiums, brokers (paper now, Upstox later).
Pure Python: no Django, Celery or Redis imports; money in Decimal."""
