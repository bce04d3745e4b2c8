"""`up` killed with SIGKILL (the OOM killer, `kill -9`) takes everything it started with it.

Every child the supervisor starts runs under a guard process that Linux tells when the supervisor
dies (PR_SET_PDEATHSIG); the guard stops the child's process group as `Supervisor.stop` would:
one SIGTERM, SIGKILL after the grace. First the guard on its own, then under a supervisor, then
the whole of `up`.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest
import redis

from auctionsite.management.commands.up import redis_answers
from auctionsite.supervisor import DIES_WITH_PARENT, guarded
from feeds.groups import WORKER_HEARTBEATS_KEY
from tests.conftest import BASE_DIR, child_env, free_port

pytestmark = pytest.mark.skipif(not DIES_WITH_PARENT, reason="PR_SET_PDEATHSIG is Linux only")


def wait_until(predicate, *, timeout: float, what: str, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    tail = f"; log:\n{log.read_text()[-6000:]}" if log is not None else ""
    raise AssertionError(f"timed out waiting for {what}{tail}")


def running(proc: psutil.Process) -> bool:
    """Still alive: a zombie has ended (nobody may reap an orphan here: PID 1 is not an init)."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_while_the_parent_lives_the_guard_passes_the_childs_exit_on():
    code = subprocess.run(
        guarded([sys.executable, "-c", "raise SystemExit(3)"], parent_pid=os.getpid(), grace=1)
    )
    assert code.returncode == 3
    killed = "import os, signal; os.kill(os.getpid(), signal.SIGUSR1)"
    by_signal = subprocess.run(guarded([sys.executable, "-c", killed], parent_pid=os.getpid(), grace=1))
    assert by_signal.returncode == -signal.SIGUSR1


def test_a_child_whose_parent_is_already_gone_does_not_start(tmp_path):
    marker = tmp_path / "ran"
    # The guard's parent is this process, not the one it is told to die with: as if that one had
    # died between the fork and the prctl call, and the guard had been adopted.
    argv = guarded(["touch", str(marker)], parent_pid=os.getppid(), grace=1)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert done.returncode != 0
    assert f"parent {os.getppid()} is gone; not starting" in done.stderr
    assert not marker.exists()


# The supervisor in a process of its own, so that the test can SIGKILL it; idle threads besides
# its output pumps, as a dying process with threads hands its children from thread to thread.
SUPERVISOR = """
import sys, threading, time
from auctionsite.supervisor import ProcessSpec, Supervisor
for _ in range(4):
    threading.Thread(target=time.sleep, args=(120,), daemon=True).start()
supervisor = Supervisor(output=sys.stderr, grace=float(sys.argv[1]))
supervisor.reconcile([ProcessSpec.of("child", [sys.executable, "-c", *sys.argv[2:]])])
supervisor.step()
print(supervisor.children["child"].pid, flush=True)
time.sleep(120)
"""
# Notes every SIGTERM and takes a while to stop, as the feed does while it flushes.
POLITE = """
import signal, sys, time
from pathlib import Path
marker = Path(sys.argv[1])
def note(signum, frame):
    with marker.open("a") as fh:
        fh.write(signal.Signals(signum).name + "\\n")
signal.signal(signal.SIGTERM, note)
marker.write_text("ready\\n")
while "SIGTERM" not in marker.read_text():
    time.sleep(0.05)
time.sleep(1)
"""
# Ignores SIGTERM and has forked a grandchild, as a stuck Celery prefork worker.
STUBBORN = """
import signal, subprocess, sys, time
from pathlib import Path
signal.signal(signal.SIGTERM, signal.SIG_IGN)
grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
Path(sys.argv[1]).write_text(f"{grandchild.pid}\\n")
time.sleep(120)
"""


def run_and_kill_a_supervisor(code: str, marker: Path, *, grace: float) -> list[psutil.Process]:
    """Start a supervisor whose child runs `code`, SIGKILL it once `marker` has a line, and return
    the guard and every process below it, as they were before the kill."""
    supervisor = subprocess.Popen(
        [sys.executable, "-c", SUPERVISOR, f"{grace:g}", code, str(marker)],
        cwd=BASE_DIR,
        env=child_env(PYTHONPATH=str(BASE_DIR)),
        stdout=subprocess.PIPE,
        text=True,
    )
    guard = psutil.Process(int(supervisor.stdout.readline()))
    try:
        wait_until(
            lambda: marker.exists() and marker.read_text().endswith("\n"), timeout=30, what="the child"
        )
        procs = [guard, *guard.children(recursive=True)]
    finally:
        supervisor.kill()
        supervisor.wait(timeout=10)
        supervisor.stdout.close()
    return procs


def kill_leftovers(procs: list[psutil.Process]) -> None:
    for proc in procs:
        if running(proc):
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()


def test_a_supervised_child_gets_one_sigterm_when_the_supervisor_is_killed(tmp_path):
    marker = tmp_path / "child"
    procs = run_and_kill_a_supervisor(POLITE, marker, grace=10)
    try:
        wait_until(lambda: not any(running(proc) for proc in procs), timeout=20, what="the child to end")
        assert marker.read_text().splitlines() == ["ready", "SIGTERM"]
    finally:
        kill_leftovers(procs)


def test_a_child_that_ignores_sigterm_is_killed_with_its_group_after_the_grace(tmp_path):
    marker = tmp_path / "child"
    procs = run_and_kill_a_supervisor(STUBBORN, marker, grace=1)
    try:
        grandchild = int(marker.read_text())
        assert grandchild in {proc.pid for proc in procs}
        wait_until(
            lambda: not any(running(proc) for proc in procs), timeout=15, what="the group to be killed"
        )
    finally:
        kill_leftovers(procs)


# --- The whole of `up` ------------------------------------------------------------------------
class Up:
    """One `manage.py up` in a subprocess, on its own SQLite and var/ under `root`."""

    def __init__(self, root: Path, redis_url: str) -> None:
        self.port = free_port()
        self.log = root / "up.log"
        self.tree: list[psutil.Process] = []
        self.described: dict[int, str] = {}
        self.groups: set[int] = set()
        env = child_env(
            VAR_DIR=str(root / "var"),
            HISTORY_DIR=str(root / "var" / "history"),
            DATABASE_URL=f"sqlite:///{root / 'up.sqlite3'}",
            REDIS_URL=redis_url,
            FEED_SOURCE="sim",
            SIM_SPEED="10",
        )
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "manage.py", "up", "--port", str(self.port), "--backtest-concurrency", "2"],
                cwd=BASE_DIR,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_for_the_whole_tree(self) -> list[psutil.Process]:
        """Every process `up` started, once the web server answers, the feed runs and both prefork
        workers have their pool processes."""
        wait_until(self._serving, timeout=90, what="/healthz", log=self.log)

        def whole_tree():
            procs, cmdlines, groups = psutil.Process(self.process.pid).children(recursive=True), [], set()
            for proc in procs:
                try:
                    cmdlines.append(proc.cmdline())
                    groups.add(os.getpgid(proc.pid))
                except (psutil.NoSuchProcess, ProcessLookupError):
                    return None  # a child is being restarted: look again
            pooled = [argv for argv in cmdlines if "--pool" in argv and "prefork" in argv]
            feed = any("runfeed" in argv for argv in cmdlines)
            # maintenance: its leader and one pool process; backtests: its leader and two.
            if len(pooled) < 5 or not feed:
                return None
            self.described = {proc.pid: shlex.join(argv) for proc, argv in zip(procs, cmdlines, strict=True)}
            self.groups = groups - {os.getpgid(0)}
            return procs

        self.tree = wait_until(whole_tree, timeout=60, what="the feed and the pool processes", log=self.log)
        return self.tree

    def _serving(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2):
                return True
        except urllib.error.HTTPError:
            return True  # 503 while checks are red is still an answer
        except OSError:
            return False

    def kill_and_expect_the_tree_to_end(self) -> None:
        """SIGKILL `up`; within 20 s nothing of its tree is left, nor anything else in the process
        groups of its children (what they forked after the tree was seen)."""
        self.process.kill()
        self.process.wait(timeout=10)

        def left() -> list[str]:
            procs = [proc for proc in self.tree if running(proc)]
            for proc in psutil.process_iter():
                try:
                    if os.getpgid(proc.pid) in self.groups and running(proc) and proc not in procs:
                        procs.append(proc)
                except (ProcessLookupError, psutil.NoSuchProcess):
                    pass
            return [self.described.get(proc.pid, f"pid {proc.pid}") for proc in procs]

        deadline = time.monotonic() + 20
        while (still := left()) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert still == [], "still running 20 s after up was killed:\n" + "\n".join(still)

    def clean_up(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        for proc in self.tree:
            if running(proc):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                with contextlib.suppress(psutil.NoSuchProcess):
                    proc.kill()


@pytest.fixture
def start_up(tmp_path):
    started: list[Up] = []

    def start(redis_url: str) -> Up:
        up = Up(tmp_path, redis_url)
        started.append(up)
        return up

    yield start
    for up in started:
        up.clean_up()


@pytest.mark.slow
def test_a_sigkilled_up_takes_every_process_it_started_with_it(start_up, private_redis_url):
    """Once the feed, web server, workers (with their pool processes) and beat run, SIGKILL `up`:
    every process in its tree ends, the Celery ones by a clean shutdown (removing their heartbeats)."""
    with redis.Redis.from_url(private_redis_url, decode_responses=True) as client:
        client.delete(WORKER_HEARTBEATS_KEY)
        up = start_up(private_redis_url)
        up.wait_for_the_whole_tree()

        def celery_processes_beating():
            names = {name.split("@")[0] for name in client.hkeys(WORKER_HEARTBEATS_KEY)}
            return {"maintenance", "backtests", "beat"} <= names and any(
                name.startswith("worker-") for name in names
            )

        wait_until(celery_processes_beating, timeout=60, what="the Celery heartbeats", log=up.log)
        beating = set(client.hkeys(WORKER_HEARTBEATS_KEY))

        up.kill_and_expect_the_tree_to_end()
        assert beating & set(client.hkeys(WORKER_HEARTBEATS_KEY)) == set(), "not a clean shutdown"


@pytest.mark.slow
def test_the_redis_a_sigkilled_up_started_ends_with_the_rest(start_up):
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing answers there: `up` starts a Redis
    up = start_up(url)
    tree = up.wait_for_the_whole_tree()
    assert any(proc.name() == "redis-server" for proc in tree)

    up.kill_and_expect_the_tree_to_end()
    assert not redis_answers(url)
