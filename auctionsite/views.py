"""Site-wide pages: the dashboard, its history reads, the staff controls and /healthz.

Thin: reads come from selectors and health checks; the staff controls (strategy on/off, kill
switch) only call the strategies' own audited services, by POST with CSRF, never by GET.
"""

from __future__ import annotations

import logging
from datetime import date
from functools import wraps

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from auctionsite import health, selectors

log = logging.getLogger(__name__)

COMPOSITE_MAX_SESSIONS = 60


def staff_only(view):
    """Logged in (else the login page) and staff (else 403): non-staff users see status only."""

    @login_required
    @wraps(view)
    def wrapped(request: HttpRequest, *args, **kwargs):
        if not request.user.is_staff:
            raise PermissionDenied("staff only")
        return view(request, *args, **kwargs)

    return wrapped


@login_required
def dashboard(request: HttpRequest) -> HttpResponse:
    watchlist = selectors.watchlist()
    return render(
        request,
        "dashboard.html",
        {
            "watchlist": watchlist,
            "market_ws_path": "/ws/market/",
            "strategies": selectors.strategy_statuses(),
            "auction_panels": [
                {"key": i.key, "name": i.name, "days": selectors.history_days(i.key)[:120]} for i in watchlist
            ],
            "initial_signals": selectors.todays_signals(),
        },
    )


def _instrument_and_day(request: HttpRequest) -> tuple[str, date]:
    key = request.GET.get("instrument", "")
    if key not in {i.key for i in selectors.watchlist()}:
        raise Http404("not a watched instrument")
    try:
        return key, date.fromisoformat(request.GET.get("day", ""))
    except ValueError:
        raise Http404("day must be YYYY-MM-DD") from None


@login_required
@require_GET
def auction_history(request: HttpRequest) -> JsonResponse:
    """A past session's final profile (`?instrument=&day=`), from the history store."""
    key, day = _instrument_and_day(request)
    message = selectors.session_profile(key, day)
    if message is None:
        return JsonResponse({"error": f"no stored session for {day.isoformat()}"}, status=404)
    return JsonResponse(message)


@login_required
@require_GET
def auction_composite(request: HttpRequest) -> JsonResponse:
    """The composite of the last `n` stored sessions up to `day` (`?instrument=&day=&n=`)."""
    key, day = _instrument_and_day(request)
    try:
        n = int(request.GET.get("n", "5"))
    except ValueError:
        n = 0
    if not 1 <= n <= COMPOSITE_MAX_SESSIONS:
        return JsonResponse({"error": f"n must be 1..{COMPOSITE_MAX_SESSIONS}"}, status=400)
    body = selectors.composite(key, day, n)
    if body is None:
        return JsonResponse({"error": "no stored sessions"}, status=404)
    return JsonResponse(body)


@require_POST
@staff_only
def strategy_enabled(request: HttpRequest, slug: str) -> HttpResponse:
    """Switch a strategy on or off (audited by the service)."""
    from strategies import services
    from strategies.models import StrategyConfig

    config = get_object_or_404(StrategyConfig, slug=slug)
    enable = request.POST.get("enabled") == "1"
    services.set_strategy_enabled(config, enable, actor=request.user)
    messages.success(request, f"Strategy {slug} {'enabled' if enable else 'disabled'}.")
    return redirect("dashboard")


@require_POST
@staff_only
def kill_switch(request: HttpRequest) -> HttpResponse:
    """The kill switch: every strategy disabled and paper positions squared off, by the kill
    switch service, which records it in the audit log."""
    try:
        from strategies.execution import killswitch
    except ImportError:
        messages.error(request, "The kill switch service is not installed: nothing was changed.")
        return redirect("dashboard")
    reason = (request.POST.get("reason") or "").strip()[:200] or "kill switch from the dashboard"
    result = killswitch.engage(actor=request.user, reason=reason)
    log.warning("kill switch engaged by %s", request.user.get_username())
    messages.warning(request, f"Kill switch engaged. {_describe(result)}".strip())
    return redirect("dashboard")


def _describe(result: object) -> str:
    """A one-line summary of what the kill switch service reports (whatever its shape)."""
    if result is None:
        return ""
    if isinstance(result, dict):
        return ", ".join(
            f"{k.replace('_', ' ')}: {v}" for k, v in result.items() if not isinstance(v, (list, dict))
        )
    summary = getattr(result, "summary", None)
    return summary() if callable(summary) else str(summary or "")


@never_cache
def healthz(request: HttpRequest) -> JsonResponse:
    """200 when every check is up (or merely degraded), 503 when one is down; never a traceback."""
    overall, checks = health.run_checks()
    body = {"status": overall, "checks": {name: check.as_json() for name, check in checks.items()}}
    return JsonResponse(body, status=503 if overall == health.DOWN else 200)
