"""/ws/backtests/<id>/ over the real Redis pub/sub layer: unauthenticated and other users' connections
are refused, the owner and staff get the current status at once and then the worker's messages."""

from __future__ import annotations

from datetime import date

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser

from auctionsite.routing import websocket_urlpatterns
from strategies.backtests.models import BacktestRun
from strategies.backtests.progress import progress_message, send_progress

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def people():
    User = get_user_model()
    owner = User.objects.create_user("owner", password="pw-owner-1")
    other = User.objects.create_user("other", password="pw-other-1")
    staff = User.objects.create_user("staff", password="pw-staff-1", is_staff=True)
    run = BacktestRun.objects.create(
        user=owner,
        strategy="ib_breakout",
        instruments=["NSE_INDEX|Nifty 50"],
        start=date(2024, 3, 1),
        end=date(2024, 3, 31),
        capital=100000,
        state="running",
        sessions_done=3,
        sessions_total=10,
    )
    return owner, other, staff, run


def communicator(user, run_id: int) -> WebsocketCommunicator:
    app = URLRouter(websocket_urlpatterns)
    comm = WebsocketCommunicator(app, f"/ws/backtests/{run_id}/")
    comm.scope["user"] = user
    return comm


def test_refuses_anonymous_and_other_users(private_channel_layer, people):
    owner, other, staff, run = people

    async def scenario():
        for user, code in ((AnonymousUser(), 4401), (other, 4403)):
            comm = communicator(user, run.pk)
            connected, close_code = await comm.connect()
            assert not connected and close_code == code
        comm = communicator(owner, run.pk + 1000)  # no such run
        connected, close_code = await comm.connect()
        assert not connected and close_code == 4403

    async_to_sync(scenario)()


def test_owner_and_staff_get_status_then_progress(private_channel_layer, people):
    owner, other, staff, run = people

    async def scenario():
        comms = [communicator(owner, run.pk), communicator(staff, run.pk)]
        for comm in comms:
            connected, _ = await comm.connect()
            assert connected
            first = await comm.receive_json_from(timeout=5)
            assert first == {
                "type": "backtest.progress",
                "done": 3,
                "total": 10,
                "eta_s": None,
                "state": "running",
            }
        await database_sync_to_async(send_progress)(run.pk, progress_message(4, 10, 12.34, "running"))
        for comm in comms:
            message = await comm.receive_json_from(timeout=5)
            assert message == {
                "type": "backtest.progress",
                "done": 4,
                "total": 10,
                "eta_s": 12.3,
                "state": "running",
            }
            await comm.disconnect()

    async_to_sync(scenario)()
