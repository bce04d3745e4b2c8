"""`python manage.py runfeed --source sim|replay|upstox`: the feed process.

Builds the source, the history writer (the store's only writer, in a child process of its own:
persistence.writer_process), a Redis client and the Channels layer, and runs
`feeds.pipeline.FeedPipeline` on one asyncio loop until the source ends or SIGTERM / SIGINT arrives;
then it stops the source, flushes everything, closes the writer and exits 0.

Extension point: `settings.FEED_FLUSH_HOOKS` (optional) lists dotted paths of factories
`factory(pipeline) -> hook | None`; each hook is appended to `pipeline.on_flush` and called after
every flush with a `feeds.pipeline.FlushReport` (the stream id ranges just written). Strategy
dispatch ("send each enabled strategy a task naming the stream range") plugs in there.

Thin on purpose: argument checking and wiring only. Secrets never reach a log line.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import signal
import time
from datetime import date, datetime
from datetime import time as dtime

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.utils.module_loading import import_string

from feeds import contracts, universe
from feeds.pipeline import STREAM_FLUSH_MS, FeedPipeline, OptionInfo, option_infos
from feeds.sources import TickSource

log = logging.getLogger("feeds.runfeed")

SOURCES = ("sim", "replay", "upstox")


def _parse_date(value: str | None) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise CommandError(f"bad --date {value!r}: expected YYYY-MM-DD") from None


def _parse_time(value: str | None, flag: str) -> dtime | None:
    if value is None:
        return None
    if value == "now":
        # The wall clock's time of day in IST: a sim of today at speed 1 then tracks the real clock.
        return datetime.now(contracts.IST).time().replace(microsecond=0)
    try:
        return dtime.fromisoformat(value)
    except ValueError:
        raise CommandError(f"bad {flag} {value!r}: expected HH:MM, HH:MM:SS (IST) or now") from None


# A session stored into its last minute counts as complete.
SESSION_LAST_MINUTE = dtime(15, 29)


def stored_session_resume(day: date) -> dtime | None:
    """Where a restarted simulated session picks up: the last watchlist tick the history store holds
    for `day`, so a feed that `up` restarts continues its session instead of starting again at
    09:15 (the dashboard would run backwards). None when nothing is stored for the day or it was
    stored to its close: then the session runs from the open again (the store drops what it has)."""
    from persistence.readers import read_ticks

    last_ms = 0
    for key in settings.WATCHLIST:
        ts = read_ticks(key, day, day).column("ts_ms").to_pylist()
        last_ms = max([last_ms, *ts[-1:]])
    if not last_ms:
        return None
    resume = datetime.fromtimestamp(last_ms / 1000, contracts.IST).time().replace(microsecond=0)
    return resume if resume < SESSION_LAST_MINUTE else None


class Command(BaseCommand):
    help = "Run the market data feed: source -> history store + Redis Streams + dashboard snapshots."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--source", default=None, help="sim | replay | upstox (default: FEED_SOURCE)")
        parser.add_argument(
            "--speed", type=float, default=None, help="N x real time (sim, replay); >=1000 flat out"
        )
        parser.add_argument("--date", default=None, help="session day YYYY-MM-DD (sim: also the seed)")
        parser.add_argument("--instruments", default=None, help="comma-separated instrument keys")
        parser.add_argument(
            "--start",
            default=None,
            help="start of the session slice, HH:MM[:SS] IST or 'now' (sim, replay; default 09:15)",
        )
        parser.add_argument(
            "--end", default=None, help="end of the session slice, HH:MM[:SS] IST (sim, replay)"
        )
        parser.add_argument("--option-strikes", type=int, default=None, help="sim: strikes each side of ATM")
        parser.add_argument(
            "--redis-prefix",
            default="",
            help="prefix for every Redis key and the Channels group (tests; a second feed beside a live one)",
        )

    def handle(self, *args, **options) -> None:
        source_name = options["source"] or settings.FEED_SOURCE
        if source_name not in SOURCES:
            raise CommandError(f"unknown source {source_name!r}: choose one of {', '.join(SOURCES)}")
        speed = options["speed"] if options["speed"] is not None else settings.SIM_SPEED
        if speed <= 0:
            raise CommandError(f"bad --speed {speed:g}: must be > 0")
        day = _parse_date(options["date"])
        start = _parse_time(options["start"], "--start")
        end = _parse_time(options["end"], "--end")
        instruments = [k.strip() for k in (options["instruments"] or "").split(",") if k.strip()] or None
        source, snapshot_keys, names, options_meta = self._build_source(
            source_name, day, speed, instruments, start, end, options["option_strikes"]
        )
        started = time.monotonic()
        log.info(
            "runfeed start: source=%s speed=%g instruments=%d (%s) history=%s",
            source_name,
            speed,
            len(getattr(source, "instruments", None) or instruments or []),
            ", ".join((getattr(source, "instruments", None) or instruments or ["all"])[:6]),
            settings.HISTORY_DIR,
        )
        pipeline = asyncio.run(
            self._main(source, snapshot_keys, names, options_meta, options["redis_prefix"])
        )
        s = pipeline.stats
        log.info(
            "runfeed exit: ticks=%d streamed=%d rows_written=%d snapshots=%d duration=%.1fs store_flush=%s stream_flush=%s",
            s.ticks_in,
            s.ticks_streamed,
            s.rows_written,
            s.snapshots_sent,
            time.monotonic() - started,
            s.flush_summary(),
            s.stream_flush_summary(),
        )

    def _build_source(
        self,
        name: str,
        day: date | None,
        speed: float,
        instruments: list[str] | None,
        start: dtime | None,
        end: dtime | None,
        option_strikes: int | None,
    ) -> tuple[TickSource, list[str], dict[str, str], dict[str, OptionInfo]]:
        """The source, the instruments the dashboard snapshot shows, their names, option metadata."""
        if name == "sim":
            from feeds.sim import OPTION_STRIKES, SimSource, default_session_day

            if start is None:
                start = stored_session_resume(day or default_session_day())
                if start is not None:
                    log.info(
                        "resuming the simulated session at %s IST (the history store holds it so far)", start
                    )
            try:
                source = SimSource(
                    day,
                    speed,
                    instruments,
                    start=start,
                    end=end,
                    option_strikes=option_strikes if option_strikes is not None else OPTION_STRIKES,
                )
            except ValueError as exc:
                raise CommandError(str(exc)) from None
            return (
                source,
                source.snapshot_keys(),
                source.names(),
                option_infos(source.session.master, source.instruments),
            )
        if name == "replay":
            from feeds.replay import NoStoredData, ReplaySource

            if day is None:
                raise CommandError("--source replay needs --date YYYY-MM-DD (the stored session to replay)")
            try:
                source = ReplaySource(day, speed, instruments, start=start, end=end)
            except NoStoredData as exc:
                raise CommandError(str(exc)) from None
            keys, names = self._reference_keys(day)
            master = universe.generate_master(contracts.trading_day_on_or_before(day))
            return (
                source,
                [k for k in keys if k in source.instruments],
                names,
                option_infos(master, source.instruments),
            )
        # upstox: the real feed, written by another module; imported only when asked for.
        try:
            from feeds.upstox.source import UpstoxSource
        except ImportError as exc:
            raise CommandError(f"the Upstox source is not available: {exc}") from None
        try:
            source = UpstoxSource.from_settings(instruments=instruments)
        except (ValueError, LookupError) as exc:
            raise CommandError(str(exc)) from None
        keys, names = self._upstox_reference_keys(day or datetime.now(contracts.IST).date())
        return source, keys, names, {}

    @staticmethod
    def _upstox_reference_keys(day: date) -> tuple[list[str], dict[str, str]]:
        """Watchlist indices and their near-month futures from the loaded Upstox master (database)."""
        from feeds.models import Instrument
        from feeds.upstox import instruments as master

        keys = list(settings.WATCHLIST)
        try:
            keys += [f for f in (master.near_month_future(k, day) for k in settings.WATCHLIST) if f]
            names = dict(
                Instrument.objects.filter(instrument_key__in=keys).values_list(
                    "instrument_key", "trading_symbol"
                )
            )
        except Exception as exc:  # no master loaded yet: show the indices only
            log.warning("runfeed: no instrument master for the futures snapshot (%s)", exc)
            names = {}
        for key in settings.WATCHLIST:
            names[key] = key.split("|", 1)[-1]
        return keys, names

    @staticmethod
    def _reference_keys(day: date) -> tuple[list[str], dict[str, str]]:
        """Watchlist indices and their near-month futures (by the generated master's tokens)."""
        keys = list(settings.WATCHLIST)
        master = universe.generate_master(contracts.trading_day_on_or_before(day))
        for key in settings.WATCHLIST:
            try:
                keys.append(universe.near_future(master, key)["instrument_key"])
            except (LookupError, ValueError):
                continue
        names = {
            r["instrument_key"]: r["name"] if r["instrument_type"] == "INDEX" else r["trading_symbol"]
            for r in master
        }
        return keys, names

    async def _main(
        self,
        source: TickSource,
        snapshot_keys: list[str],
        names: dict[str, str],
        options_meta: dict[str, OptionInfo],
        prefix: str,
    ) -> FeedPipeline:
        import redis.asyncio as aioredis
        from channels.layers import get_channel_layer

        from persistence.writer_process import HistoryWriterProcess

        try:
            # The store's writer runs in a child process (persistence.writer_process): at tens of
            # thousands of ticks a second this process's GIL is needed for the source and Redis.
            writer = await asyncio.to_thread(HistoryWriterProcess, settings.HISTORY_DIR)
        except Exception as exc:  # StoreLocked and friends: one clear line, not a traceback
            raise CommandError(f"cannot open the history store at {settings.HISTORY_DIR}: {exc}") from None
        redis = aioredis.from_url(settings.REDIS_URL)
        layer = get_channel_layer()
        pipeline = FeedPipeline(
            source_name=source.name,
            writer=writer,
            redis=redis,
            channel_layer=layer,
            snapshot_keys=snapshot_keys,
            names=names,
            options=options_meta,
            flush_ms=settings.FEED_FLUSH_MS,
            stream_ms=getattr(settings, "FEED_STREAM_MS", STREAM_FLUSH_MS),
            snapshot_ms=settings.FEED_SNAPSHOT_MS,
            stream_maxlen=settings.TICK_STREAM_MAXLEN,
            key_prefix=prefix,
            # A restarted live feed must not stream its session twice; a replay re-sends on purpose.
            resume_streams=source.name != "replay",
        )
        for path in getattr(settings, "FEED_FLUSH_HOOKS", ()):
            hook = import_string(path)(pipeline)
            if hook is not None:
                pipeline.on_flush.append(hook)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, pipeline, sig)
        try:
            await pipeline.run(source)
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            # Hooks with background work (the auction publisher's task) stop while Redis and the
            # layer still answer: a task left running into their close could hang the exit.
            for hook in pipeline.on_flush:
                close = getattr(getattr(hook, "__self__", hook), "close", None)
                if close is not None:
                    try:
                        result = close()
                        if inspect.isawaitable(result):
                            await result
                    except Exception:
                        log.exception("runfeed: closing a flush hook failed")
            if layer is not None:
                await layer.flush()
            await redis.aclose()
        return pipeline

    @staticmethod
    def _on_signal(pipeline, sig) -> None:
        log.info("runfeed: %s received, stopping the source and flushing", signal.Signals(sig).name)
        pipeline.stop()
