"""URLs under /backtests/: runs (list, new, report, cancel, status), comparison, sweeps."""

from django.urls import path

from strategies.backtests import views

urlpatterns = [
    path("", views.run_list, name="backtest-list"),
    path("new/", views.run_new, name="backtest-new"),
    path("compare/", views.run_compare, name="backtest-compare"),
    path("<int:run_id>/", views.run_detail, name="backtest-detail"),
    path("<int:run_id>/cancel/", views.run_cancel, name="backtest-cancel"),
    path("<int:run_id>/status/", views.run_status, name="backtest-status"),
    path("sweeps/new/", views.sweep_new, name="backtest-sweep-new"),
    path("sweeps/<int:sweep_id>/", views.sweep_detail, name="backtest-sweep"),
]
