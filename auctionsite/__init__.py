"""The auction trading platform's Django project: settings, Celery app, ASGI routing, site views."""

from auctionsite.celery import app as celery_app

__all__ = ["celery_app"]
