"""URLs under /upstox/: Connect Upstox (staff) and the OAuth callback (UPSTOX_REDIRECT_URI)."""

from django.urls import path

from feeds import views

urlpatterns = [
    path("", views.connect, name="upstox-connect"),
    path("start/", views.start, name="upstox-start"),
    path("callback/", views.callback, name="upstox-callback"),
]
