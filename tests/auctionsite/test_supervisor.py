"""The supervisor behind `manage.py up`, driven step by step on real child processes."""

from __future__ import annotations

import io
import json
import os
import signal
import sys
import time

import psutil
import pytest

from auctionsite.supervisor import DIES_WITH_PARENT, ProcessSpec, Supervisor, describe_exit


class FakeClock:
    """Backoff is about time; the test moves time instead of waiting for it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def py(name: str, code: str) -> ProcessSpec:
    return ProcessSpec.of(name, [sys.executable, "-c", code])


def wait_until(predicate, timeout: float = 15.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def gone(pid: int) -> bool:
    """Dead, or a zombie nobody reaps (PID 1 here is not an init)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.fixture
def make_supervisor():
    made: list[Supervisor] = []

    def make(**kwargs) -> Supervisor:
        kwargs.setdefault("output", io.StringIO())
        kwargs.setdefault("clock", FakeClock())
        sup = Supervisor(**kwargs)
        made.append(sup)
        return sup

    yield make
    for sup in made:
        sup.grace = 1.0
        sup.stop()


def test_describe_exit():
    assert describe_exit(0) == "exit code 0"
    assert describe_exit(3) == "exit code 3"
    assert describe_exit(-signal.SIGKILL) == "signal SIGKILL"


def test_a_child_that_exits_is_restarted_with_capped_exponential_backoff(make_supervisor):
    clock = FakeClock()
    sup = make_supervisor(clock=clock, backoff_initial=1.0, backoff_max=3.0, stable_after=60.0)
    sup.reconcile([py("flaky", "import sys; sys.exit(3)")])

    delays = []
    pids = []
    for _ in range(4):
        sup.step()  # starts it (it is due)
        child = sup.children["flaky"]
        pids.append(child.pid)
        child.process.wait(timeout=15)
        sup.step()  # reaps it and schedules the restart
        assert child.process is None
        delays.append(child.next_start_at - clock.now)
        # Not before its time...
        clock.now += delays[-1] - 0.01
        sup.step()
        assert child.process is None
        # ...and right after.
        clock.now += 0.02
    assert delays == pytest.approx([1.0, 2.0, 3.0, 3.0], abs=0.001)
    assert len(set(pids)) == 4
    log = sup.output.getvalue()
    assert f"flaky (pid {pids[0]}) exited with exit code 3" in log
    assert "restarting in 2 s" in log


def test_backoff_resets_after_a_stable_run_and_signals_are_named(make_supervisor):
    clock = FakeClock()
    sup = make_supervisor(clock=clock, backoff_initial=1.0, stable_after=30.0)
    sup.reconcile([py("sleeper", "import time; time.sleep(60)")])
    sup.step()
    child = sup.children["sleeper"]
    child.failures_in_a_row = 4  # as after a crash loop
    clock.now += 31  # it has now run long enough to count as healthy
    os.kill(child.pid, signal.SIGKILL)
    child.process.wait(timeout=15)
    sup.step()
    assert child.next_start_at - clock.now == pytest.approx(1.0)
    assert "exited with signal SIGKILL after 31.0 s" in sup.output.getvalue()


def test_a_command_that_cannot_start_is_retried_not_raised(make_supervisor):
    clock = FakeClock()
    sup = make_supervisor(clock=clock)
    sup.reconcile([ProcessSpec.of("ghost", ["/nonexistent/binary"])])
    sup.step()
    child = sup.children["ghost"]
    if DIES_WITH_PARENT:
        # The exec fails under the guard process (after its fork): the child exits 127 at once.
        child.process.wait(timeout=15)
        sup.step()
        wait_until(lambda: "could not start (FileNotFoundError" in sup.output.getvalue(), what="output")
        assert "ghost (pid" in sup.output.getvalue() and "exited with exit code 127" in sup.output.getvalue()
    else:
        assert "ghost could not start (FileNotFoundError" in sup.output.getvalue()
    assert child.process is None
    assert child.next_start_at == pytest.approx(clock.now + 1.0)


def test_output_lines_are_prefixed_with_the_child_name(make_supervisor):
    sup = make_supervisor()
    sup.reconcile([py("talker", "import sys; print('hello'); print('oops', file=sys.stderr)")])
    sup.step()
    sup.children["talker"].process.wait(timeout=15)
    wait_until(lambda: "oops" in sup.output.getvalue(), what="output")
    lines = sup.output.getvalue().splitlines()
    assert any(line.startswith("talker") and line.endswith("| hello") for line in lines)
    assert any(line.startswith("talker") and line.endswith("| oops") for line in lines)


# A child that ignores SIGTERM and has forked a grandchild, as a Celery prefork worker has.
STUBBORN = """
import signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
print("grandchild", grandchild.pid, flush=True)
time.sleep(120)
"""


def grandchild_pid(sup: Supervisor) -> int:
    def find():
        for line in sup.output.getvalue().splitlines():
            if "| grandchild " in line:
                return int(line.rsplit(" ", 1)[1])
        return None

    return wait_until(find, what="grandchild pid")


def test_stop_terminates_every_child_and_its_process_group(make_supervisor, tmp_path):
    sup = make_supervisor(grace=1.0, state_file=tmp_path / "up.json")
    sup.reconcile([py("stubborn", STUBBORN), py("polite", "import time; time.sleep(120)")])
    sup.step()
    leader = sup.children["stubborn"].pid
    polite = sup.children["polite"].pid
    grandchild = grandchild_pid(sup)
    assert os.getpgid(grandchild) == leader  # its own group, so it can be killed as one
    assert os.getpgid(leader) != os.getpgid(0)

    state = json.loads((tmp_path / "up.json").read_text())
    assert state["children"]["stubborn"]["pid"] == leader

    started = time.monotonic()
    sup.stop()
    assert time.monotonic() - started < 10
    for pid in (leader, polite, grandchild):
        assert wait_until(lambda pid=pid: gone(pid), timeout=5, what=f"pid {pid} to die")
    assert "stubborn did not stop in 1 s; killed" in sup.output.getvalue()


def test_a_dead_leader_takes_its_group_with_it_before_the_restart(make_supervisor):
    sup = make_supervisor()
    sup.reconcile([py("stubborn", STUBBORN)])
    sup.step()
    leader = sup.children["stubborn"].pid
    grandchild = grandchild_pid(sup)
    os.kill(leader, signal.SIGKILL)
    sup.children["stubborn"].process.wait(timeout=15)
    sup.step()
    assert wait_until(lambda: gone(grandchild), timeout=5, what="orphaned grandchild to die")


def test_reconcile_starts_new_stops_removed_and_restarts_changed(make_supervisor):
    clock = FakeClock()
    sup = make_supervisor(clock=clock, grace=5.0)
    keep = py("keep", "import time; time.sleep(120)")
    drop = py("drop", "import time; time.sleep(120)")
    change = py("change", "import time; time.sleep(120)")
    sup.reconcile([keep, drop, change])
    sup.step()
    pids = {name: child.pid for name, child in sup.children.items()}

    changed = ProcessSpec.of("change", [sys.executable, "-c", "import time; time.sleep(121)"])
    sup.reconcile([keep, changed, py("new", "import time; time.sleep(120)")])
    sup.step()
    assert sup.children["new"].pid is not None
    wait_until(lambda: gone(pids["drop"]) and gone(pids["change"]), what="removed and changed to stop")
    sup.step()
    assert "drop" not in sup.children
    assert sup.children["keep"].pid == pids["keep"]
    assert sup.children["change"].pid not in (None, pids["change"])
    assert sup.children["change"].process.args[-1].endswith("sleep(121)")
    # A deliberate restart is not a failure: no backoff.
    assert sup.children["change"].failures_in_a_row == 0


def test_a_child_that_ignores_sigterm_when_removed_is_killed_after_grace(make_supervisor):
    clock = FakeClock()
    sup = make_supervisor(clock=clock, grace=5.0)
    sup.reconcile([py("stubborn", STUBBORN)])
    sup.step()
    grandchild = grandchild_pid(sup)
    leader = sup.children["stubborn"].pid
    sup.reconcile([])
    sup.step()
    assert not gone(leader)  # SIGTERM ignored, grace not over
    clock.now += 5.0
    sup.step()  # escalates to SIGKILL of the group
    wait_until(lambda: gone(leader) and gone(grandchild), what="group killed")
    sup.step()
    assert sup.children == {}


def test_a_job_that_finishes_is_not_restarted_but_one_that_fails_is(make_supervisor):
    clock = FakeClock()
    sup = make_supervisor(clock=clock)
    done = ProcessSpec.of("done", [sys.executable, "-c", "pass"], restart="on-failure")
    broken = ProcessSpec.of("broken", [sys.executable, "-c", "raise SystemExit(2)"], restart="on-failure")
    sup.reconcile([done, broken])
    sup.step()
    for child in sup.children.values():
        child.process.wait(timeout=15)
    sup.step()
    clock.now += 60
    sup.step()
    assert sup.children["done"].process is None and sup.children["done"].finished
    assert sup.children["broken"].process is not None and sup.children["broken"].restarts == 1
    assert "done (pid" in sup.output.getvalue() and "finished (exit code 0" in sup.output.getvalue()
    with pytest.raises(ValueError):
        ProcessSpec.of("x", ["true"], restart="sometimes")


def test_a_closed_terminal_does_not_stop_the_cleanup(make_supervisor):
    output = io.StringIO()
    sup = make_supervisor(output=output, grace=1.0)
    sup.reconcile([py("sleeper", "import time; time.sleep(120)")])
    sup.step()
    pid = sup.children["sleeper"].pid
    output.close()
    sup.stop()  # logs "stopping ..." into a closed stream
    assert wait_until(lambda: gone(pid), timeout=5, what="child to die")
