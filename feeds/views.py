"""Staff pages for the daily Upstox login: "Connect Upstox" and the OAuth callback.

Thin: the flow lives in `feeds.upstox.oauth`, the token store in `feeds.upstox.tokens`. The token
itself is never rendered; the page shows only whether one is valid and until when.
"""

from __future__ import annotations

import logging

from django.contrib import messages
from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpResponseBadRequest
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from feeds.upstox import oauth
from feeds.upstox.tokens import token_status

log = logging.getLogger(__name__)
STATE_SESSION_KEY = "upstox_oauth_state"


@staff_member_required
@require_http_methods(["GET"])
def connect(request):
    return render(request, "feeds/connect_upstox.html", {"token": token_status()})


@staff_member_required
@require_POST
def start(request):
    state = oauth.new_state()
    try:
        url = oauth.authorisation_url(state)
    except oauth.LoginError as e:
        messages.error(request, str(e))
        return redirect("upstox-connect")
    request.session[STATE_SESSION_KEY] = state
    return redirect(url)


@staff_member_required
@require_http_methods(["GET"])
def callback(request):
    expected = request.session.pop(STATE_SESSION_KEY, None)
    if not expected or request.GET.get("state") != expected:
        return HttpResponseBadRequest("This login link is stale or was not started here. Connect again.")
    if request.GET.get("error"):
        messages.error(request, "Upstox login was cancelled or refused.")
        return redirect("upstox-connect")
    try:
        token = oauth.exchange_code(code=request.GET.get("code", ""), created_by=request.user.get_username())
    except oauth.LoginError as e:
        log.warning("Upstox login failed: %s", e)
        messages.error(request, str(e))
        return redirect("upstox-connect")
    log.info("Upstox connected by %s; token valid until %s", request.user.get_username(), token.expires_at)
    messages.success(request, "Upstox connected. The feed picks the new token up on its own.")
    return redirect("upstox-connect")
