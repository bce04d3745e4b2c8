"""Site-wide pages: the dashboard and /healthz."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import JsonResponse
from django.shortcuts import render


@login_required
def dashboard(request):
    return render(request, "dashboard.html", {})


def healthz(request):
    return JsonResponse({"status": "starting"}, status=503)
