"""`manage.py fakeupstox`: run the local fake Upstox server standalone (demos, benchmarks).

Point the project at it with UPSTOX_API_URL=http://HOST:PORT and UPSTOX_WS_URL=ws://HOST:WS_PORT.
"""

from __future__ import annotations

import signal
import threading
import time
from datetime import date, datetime, timedelta

from django.core.management.base import BaseCommand

from feeds.ticks import IST
from feeds.upstox.fake import FakeUpstox


class Command(BaseCommand):
    help = "Run the fake Upstox server (REST + WebSocket feeds) until interrupted."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=9100, help="REST port")
        parser.add_argument("--ws-port", type=int, default=None, help="WebSocket port (default PORT+1)")
        parser.add_argument(
            "--session",
            default="live",
            help="live: open now, wall-clock times; sim: a simulated day from 09:00 IST; "
            "or the path of a recorded session to play back (at --speed)",
        )
        parser.add_argument("--record", default=None, help="record every feed frame sent to this file")
        parser.add_argument(
            "--date", type=date.fromisoformat, default=None, help="day of the master and sim session"
        )
        parser.add_argument("--speed", type=float, default=1.0, help="sim session clock speed")
        parser.add_argument("--rate", type=float, default=200.0, help="ticks per second per connection")
        parser.add_argument("--frame-size", type=int, default=50, help="feeds per live_feed frame")
        parser.add_argument(
            "--prebuilt", action="store_true", help="bench mode: prebuilt frames stamped at send"
        )
        parser.add_argument(
            "--token",
            action="append",
            default=None,
            help="accept only these tokens (repeatable; default: any non-empty token)",
        )

    def handle(
        self,
        *args,
        host,
        port,
        ws_port,
        session,
        date,
        speed,
        rate,
        frame_size,
        prebuilt,
        token,
        record,
        **options,
    ):
        on_date = date or datetime.now(IST).date()
        clock = None
        if session == "sim":
            start_wall = time.time()
            start_sim = datetime.combine(on_date, datetime.min.time(), IST) + timedelta(hours=9)

            def clock() -> datetime:
                return start_sim + timedelta(seconds=(time.time() - start_wall) * speed)

        fake = FakeUpstox(
            host=host,
            port=port,
            ws_port=ws_port if ws_port is not None else port + 1,
            on_date=on_date,
            ticks_per_second=rate,
            frame_size=frame_size,
            prebuilt_frames=prebuilt,
            accepted_tokens=set(token) if token else None,
            session_clock=clock,
            recording=session if session not in ("live", "sim") else None,
            record_to=record,
            speed=speed,
        ).start()
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        self.stdout.write(f"fake Upstox: UPSTOX_API_URL={fake.api_url} UPSTOX_WS_URL={fake.ws_url}")
        self.stdout.write(f"instrument master: {fake.master_url} ({len(fake.master)} instruments)")
        self.stdout.flush()
        stop.wait()
        fake.stop()
