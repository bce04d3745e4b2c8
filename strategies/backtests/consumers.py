"""`/ws/backtests/<id>/`: a run's live progress for its owner (or staff).

On connect the consumer checks the user may see the run, joins the run's group `backtest.<id>` and
sends the run's current status at once (a run may finish before the page connects); afterwards it
forwards the worker's `backtest.progress` messages. It never reads results and never runs anything.
"""

from __future__ import annotations

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from strategies.backtests import selectors
from strategies.backtests.models import progress_group
from strategies.backtests.progress import progress_message

CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403


class BacktestProgressConsumer(AsyncJsonWebsocketConsumer):
    group: str | None = None

    async def connect(self):
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        run_id = int(self.scope["url_route"]["kwargs"]["run_id"])
        if not await database_sync_to_async(selectors.can_see_run)(user, run_id):
            await self.close(code=CLOSE_FORBIDDEN)
            return
        self.group = progress_group(run_id)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        status = await database_sync_to_async(selectors.run_status)(run_id)
        if status is not None:
            await self.send_json(
                progress_message(status["sessions_done"], status["sessions_total"], None, status["state"])
            )

    async def disconnect(self, code):
        if self.group is not None:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def backtest_progress(self, event):
        await self.send_json(event)
