"""Site URLs: dashboard, login/logout, /healthz, admin. (Static files: see SERVE_STATIC in asgi.py.)"""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from auctionsite import views

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("healthz", views.healthz, name="healthz"),
    path("auction/history/", views.auction_history, name="auction-history"),
    path("auction/composite/", views.auction_composite, name="auction-composite"),
    path("strategies/<slug:slug>/enabled/", views.strategy_enabled, name="strategy-enabled"),
    path("killswitch/", views.kill_switch, name="kill-switch"),
    path("accounts/login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("upstox/", include("feeds.urls")),
    path("backtests/", include("strategies.backtests.urls")),
]
