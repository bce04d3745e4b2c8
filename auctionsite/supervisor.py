"""Keeps a set of child processes running: the engine behind `manage.py up`.

A `Supervisor` owns child processes described by `ProcessSpec`s. Each child starts in its own
session (so its own process group): stopping a child signals the whole group, which takes Celery's
pool processes and anything else the child forked down with it. A child that dies is restarted
after an exponential backoff (capped); the reason (exit code or signal) is logged. Every line a
child prints is copied to one output stream, prefixed with the child's name. On Linux every child
is also stopped when the supervisor dies, however it dies (SIGKILL, the OOM killer), so no feed or
worker outlives it: each runs under a small guard process (`run_guarded`) that gets the
kernel's parent-death signal and stops the child's group as `stop()` would.

The supervisor is a plain class driven by `step()` (one non-blocking pass: reap, restart, escalate
stops) so tests call its step methods directly, as healthchecks.io's `sendalerts` is tested; the
loop, the signal handlers and what to run live in the `up` command.

This module must never import Django: it supervises processes, it does not know what they are.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn, TextIO

# <linux/prctl.h>: the signal a process gets when the thread that forked it exits.
PR_SET_PDEATHSIG = 1
DIES_WITH_PARENT = sys.platform.startswith("linux")


@dataclass(frozen=True, slots=True)
class ProcessSpec:
    """What to run under one name. Two specs with the same name but other argv/env are a change.

    `restart`: "always" (a server: any exit is a death) or "on-failure" (a job that may finish:
    exit code 0 means done, e.g. a feed whose session has ended).
    """

    name: str
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()
    cwd: str | None = None
    restart: str = "always"

    @classmethod
    def of(
        cls,
        name: str,
        argv: Iterable[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        restart: str = "always",
    ) -> ProcessSpec:
        if restart not in ("always", "on-failure"):
            raise ValueError(f"restart must be 'always' or 'on-failure', not {restart!r}")
        return cls(
            name=name, argv=tuple(argv), env=tuple(sorted((env or {}).items())), cwd=cwd, restart=restart
        )


@dataclass(slots=True)
class Child:
    """The supervisor's record of one named child (mutable: pids and restart counts change)."""

    spec: ProcessSpec
    process: subprocess.Popen | None = None
    started_at: float = 0.0
    restarts: int = 0
    failures_in_a_row: int = 0
    next_start_at: float = 0.0
    stopping_deadline: float | None = None
    removing: bool = False
    finished: bool = False
    pids: list[int] = field(default_factory=list)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None


def describe_exit(returncode: int) -> str:
    """'exit code 1' or 'signal SIGKILL' from a Popen return code."""
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"exit code {returncode}"


def signal_group(pgid: int, sig: int) -> bool:
    """Send `sig` to a process group; False when the group no longer exists."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        # A recycled pgid owned by someone else is not ours to signal.
        return False
    return True


def guarded(argv: Iterable[str], *, parent_pid: int, grace: float) -> list[str]:
    """`argv` run under `run_guarded`: stopped, with its process group, when `parent_pid` dies."""
    return [sys.executable, "-I", "-S", str(Path(__file__).resolve()), str(parent_pid), f"{grace:g}", *argv]


def run_guarded(parent_pid: int, grace: float, argv: list[str]) -> NoReturn:
    """Run `argv` as the only child of this process, and stop it when `parent_pid` dies (Linux).

    The process between a supervisor and one of its children. It asks the kernel for SIGTERM when
    its parent dies (PR_SET_PDEATHSIG), however it dies, and checks the parent did not die before
    the request was made. The kernel sends that signal each time the process is handed to a new
    parent, and a dying supervisor with threads hands it from thread to thread first: it can come
    several times, which a child would take as a second, rougher shutdown request (Celery beat
    then exits before removing its heartbeat). So the child does not get it from the kernel: this
    process turns any number of them into what `Supervisor.stop` does, once: SIGTERM to the process
    group (grandchildren included), SIGKILL to whatever is left `grace` seconds later.

    While the parent lives this process stays out of the way: the supervisor's own signals reach
    the child through the group, and the child's exit (code or signal) becomes this one's.
    """
    import ctypes

    stopping = False

    def on_term(signum, frame) -> None:
        nonlocal stopping
        if stopping or os.getppid() == parent_pid:
            return  # the supervisor stopping the group itself: the child got the same signal
        stopping = True
        signal_group(os.getpgrp(), signal.SIGTERM)
        signal.setitimer(signal.ITIMER_REAL, grace)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGALRM, lambda signum, frame: signal_group(os.getpgrp(), signal.SIGKILL))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, ctypes.c_ulong(signal.SIGTERM), *[ctypes.c_ulong(0)] * 3) != 0:
        sys.exit(f"could not request the parent-death signal: {os.strerror(ctypes.get_errno())}")
    if os.getppid() != parent_pid:
        sys.exit(f"parent {parent_pid} is gone; not starting {shlex.join(argv)}")

    handled = {signal.SIGTERM, signal.SIGALRM}
    signal.pthread_sigmask(signal.SIG_BLOCK, handled)  # none of them may run in the forked child
    pid = os.fork()
    if pid == 0:
        for signum in handled:
            signal.signal(signum, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, handled)
        try:
            os.execvp(argv[0], argv)
        except OSError as exc:
            print(f"could not start ({exc.__class__.__name__}: {exc})", file=sys.stderr, flush=True)
        os._exit(127)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, handled)
    _, status = os.waitpid(pid, 0)
    if stopping:
        signal_group(os.getpgrp(), signal.SIGKILL)  # what the child left behind, and this process
    code = os.waitstatus_to_exitcode(status)
    if code >= 0:
        os._exit(code)
    signal.signal(-code, signal.SIG_DFL)
    os.kill(os.getpid(), -code)
    os._exit(128 - code)  # not reached: a signal that ended the child ends this process too


class Supervisor:
    """Starts, watches, restarts and stops named child processes.

    `reconcile(specs)` declares the set that should run; `step()` makes it so, one pass at a time;
    `stop()` ends every child and its process group, SIGTERM first, SIGKILL after `grace` seconds.
    """

    def __init__(
        self,
        *,
        output: TextIO | None = None,
        base_env: Mapping[str, str] | None = None,
        backoff_initial: float = 1.0,
        backoff_max: float = 30.0,
        stable_after: float = 30.0,
        grace: float = 5.0,
        state_file: Path | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.output = output if output is not None else sys.stdout
        self.base_env = dict(base_env if base_env is not None else os.environ)
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.stable_after = stable_after
        self.grace = grace
        self.state_file = state_file
        self.clock = clock
        self.children: dict[str, Child] = {}
        self._write_lock = threading.Lock()
        self._pumps: list[threading.Thread] = []
        self._name_width = 12

    # --- Output -----------------------------------------------------------------------------
    def log(self, name: str, line: str) -> None:
        """One line of the combined log: the child's (or the supervisor's) name, then the line."""
        with self._write_lock:
            try:
                self.output.write(f"{name:<{self._name_width}} | {line.rstrip()}\n")
                self.output.flush()
            except (OSError, ValueError):
                # The terminal went away (closed pipe or file): losing log lines must not stop
                # the supervisor from cleaning up its children.
                pass

    def _pump(self, name: str, stream) -> None:
        # One thread per child: it ends by itself at EOF, when the child and its group have exited.
        with stream:
            for raw in iter(stream.readline, b""):
                self.log(name, raw.decode("utf-8", errors="replace"))

    # --- Desired state ----------------------------------------------------------------------
    def reconcile(self, specs: Iterable[ProcessSpec]) -> None:
        """Make `specs` the set that should run: new names start, gone names stop, changed ones restart."""
        wanted = {spec.name: spec for spec in specs}
        for name, child in list(self.children.items()):
            spec = wanted.get(name)
            if spec is None:
                if not child.removing:
                    self.log("up", f"{name} is no longer wanted; stopping it")
                    child.removing = True
                    self._begin_stop(child)
            elif spec != child.spec and not child.removing:
                self.log("up", f"{name} changed; restarting it")
                self._begin_stop(child)
                child.spec = spec
                child.finished = False
                child.failures_in_a_row = 0
                child.next_start_at = 0.0
        for name, spec in wanted.items():
            if name not in self.children:
                self.children[name] = Child(spec=spec)
                self._name_width = max(self._name_width, len(name))

    # --- One pass ---------------------------------------------------------------------------
    def step(self) -> None:
        """Reap children that exited, escalate slow stops, start whatever is due. Never blocks."""
        now = self.clock()
        changed = False
        for name, child in list(self.children.items()):
            if child.process is not None:
                code = child.process.poll()
                if code is not None:
                    changed = True
                    self._reap(child, code, now)
                elif child.stopping_deadline is not None and now >= child.stopping_deadline:
                    self.log("up", f"{name} did not stop in {self.grace:g} s; killing its process group")
                    signal_group(child.process.pid, signal.SIGKILL)
                    child.stopping_deadline = now + self.grace
            if child.process is None:
                if child.removing:
                    del self.children[name]
                    changed = True
                elif not child.finished and now >= child.next_start_at:
                    self.start(child)
                    changed = True
        if changed:
            self.write_state()

    def _reap(self, child: Child, code: int, now: float) -> None:
        name = child.spec.name
        pid = child.process.pid
        ran = now - child.started_at
        # Whatever the child left in its group (pool processes) goes with it.
        signal_group(pid, signal.SIGKILL)
        child.process = None
        if child.stopping_deadline is not None:
            child.stopping_deadline = None
            child.next_start_at = now
            return
        if code == 0 and child.spec.restart == "on-failure":
            child.finished = True
            self.log("up", f"{name} (pid {pid}) finished (exit code 0 after {ran:.1f} s); not restarted")
            return
        if ran >= self.stable_after:
            child.failures_in_a_row = 0
        delay = min(self.backoff_max, self.backoff_initial * (2**child.failures_in_a_row))
        child.failures_in_a_row += 1
        child.next_start_at = now + delay
        self.log(
            "up",
            f"{name} (pid {pid}) exited with {describe_exit(code)} after {ran:.1f} s; restarting in {delay:g} s",
        )

    def start(self, child: Child) -> None:
        """Start one child in its own session, its output piped into the combined log.

        On Linux it runs under `run_guarded`, which stops it when this process dies, however it
        dies. The kernel signals the death of the *thread* that forked it, so call this from a
        thread that lives as long as the supervisor (the `up` loop runs in the main thread).
        """
        spec = child.spec
        env = {**self.base_env, "PYTHONUNBUFFERED": "1", **dict(spec.env)}
        argv = spec.argv
        if DIES_WITH_PARENT:
            argv = guarded(argv, parent_pid=os.getpid(), grace=self.grace)
        try:
            process = subprocess.Popen(
                argv,
                cwd=spec.cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            delay = min(self.backoff_max, self.backoff_initial * (2**child.failures_in_a_row))
            child.failures_in_a_row += 1
            child.next_start_at = self.clock() + delay
            self.log(
                "up",
                f"{spec.name} could not start ({exc.__class__.__name__}: {exc}); retrying in {delay:g} s",
            )
            return
        if child.started_at:
            child.restarts += 1
        child.process = process
        child.started_at = self.clock()
        child.pids.append(process.pid)
        self.log("up", f"started {spec.name} (pid {process.pid}): {shlex.join(spec.argv)}")
        pump = threading.Thread(target=self._pump, args=(spec.name, process.stdout), daemon=True)
        pump.start()
        self._pumps = [p for p in self._pumps if p.is_alive()] + [pump]

    def _begin_stop(self, child: Child) -> None:
        if child.process is not None and child.process.poll() is None:
            signal_group(child.process.pid, signal.SIGTERM)
            child.stopping_deadline = self.clock() + self.grace

    # --- Shutdown ---------------------------------------------------------------------------
    def stop(self) -> None:
        """Stop every child and its process group: SIGTERM, wait up to `grace` s, then SIGKILL."""
        running = [c for c in self.children.values() if c.process is not None]
        for child in running:
            self.log("up", f"stopping {child.spec.name} (pid {child.process.pid})")
            signal_group(child.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.grace
        while time.monotonic() < deadline and any(c.process.poll() is None for c in running):
            time.sleep(0.05)
        for child in running:
            stubborn = child.process.poll() is None
            # Also after a clean exit of the leader: its group may still hold pool processes.
            signal_group(child.process.pid, signal.SIGKILL)
            if stubborn:
                self.log("up", f"{child.spec.name} did not stop in {self.grace:g} s; killed")
        for child in running:
            try:
                child.process.wait(timeout=self.grace)
            except subprocess.TimeoutExpired:
                self.log("up", f"{child.spec.name} (pid {child.process.pid}) survived SIGKILL")
            child.process = None
        for pump in self._pumps:
            pump.join(timeout=1.0)
        self._pumps = [p for p in self._pumps if p.is_alive()]
        self.write_state()

    # --- State for operators and tests ------------------------------------------------------
    def snapshot(self) -> dict:
        return {
            name: {
                "pid": child.pid,
                "pids": list(child.pids),
                "restarts": child.restarts,
                "argv": list(child.spec.argv),
            }
            for name, child in self.children.items()
        }

    def write_state(self) -> None:
        """Record every child's pid (and past pids) in `state_file`, atomically."""
        if self.state_file is None:
            return
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"pid": os.getpid(), "children": self.snapshot()}, indent=1))
        os.replace(tmp, self.state_file)


if __name__ == "__main__":
    # `python supervisor.py PARENT_PID GRACE ARGV...`: see `guarded`.
    run_guarded(int(sys.argv[1]), float(sys.argv[2]), sys.argv[3:])
