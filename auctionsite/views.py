"""Site-wide pages: the dashboard and /healthz. Thin: reads come from selectors and health checks."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache

from auctionsite import health, selectors


@login_required
def dashboard(request: HttpRequest) -> HttpResponse:
    return render(
        request,
        "dashboard.html",
        {"watchlist": selectors.watchlist(), "market_ws_path": "/ws/market/"},
    )


@never_cache
def healthz(request: HttpRequest) -> JsonResponse:
    """200 when every check is up (or merely degraded), 503 when one is down; never a traceback."""
    overall, checks = health.run_checks()
    body = {"status": overall, "checks": {name: check.as_json() for name, check in checks.items()}}
    return JsonResponse(body, status=503 if overall == health.DOWN else 200)
