"""Greenlets burning CPU on one thread (gevent; Debian's python3-gevent).

    python greenlets.py [--greenlets N] [--seconds S]

The main thread spawns N greenlets (gevent.spawn, default 3), each running
its own chain of functions down to a hot loop (`# krait:hot`) that yields
to the others with gevent.sleep(0) after every lap (tens of ms). The
greenlets share the thread's C stack (greenlet copies stack slices in and
out), so a profiler unwinding the native stack of one greenlet runs into
the frames of whatever ran before it on that stack.

Truth: each greenlet reports its own Python stack (root first, the root
being the greenlet's run function, leaf at the hot line) the first time it
laps; once every greenlet has, one truth line with "threads" (the main
thread, its stack not checked) and "greenlets": [{"name": "gl-0",
"root": "<qualified name of the root frame>", "stack": [...]}, ...].
Needs gevent: 3.11+ (co_qualname names the truth).
"""

from __future__ import print_function

import argparse
import sys
import time

import gevent

# --- common (identical in every workload) -----------------------------------
import dis
import gc
import json
import os
import threading
import traceback

HOT_MARKER = "# krait:" + "hot"
CALL_MARKER = "# krait:" + "call"
SELFCHECK_INTERVAL = 0.01
_print_lock = threading.Lock()


def python_version():
    return sys.version.split()[0]


def code_name(code):
    # co_qualname exists from 3.11 on; profilers report it there, co_name before.
    return getattr(code, "co_qualname", code.co_name)


def frame_name(frame):
    """The name a profiler should report for `frame`.

    From 3.11 co_qualname. Before, a method (first argument self or cls) is
    named after the class that defines it, as co_qualname would; that class
    is read from the function's own __qualname__ (3.3+), which the compiler
    wrote, not worked out from the argument's type the way a profiler must.
    2.7 has no __qualname__: there the first class of the argument's MRO
    whose __dict__ holds a function with this very code object.
    """
    code = frame.f_code
    if hasattr(code, "co_qualname"):
        return code.co_qualname
    if code.co_argcount >= 1 and code.co_varnames[0] in ("self", "cls"):
        qualname = _qualname_of(code)
        if qualname is not None:
            # "outer.<locals>.Class.method" -> "Class.method"
            parts = qualname.rsplit("<locals>.", 1)[-1].split(".")
            if len(parts) >= 2:
                return parts[-2] + "." + parts[-1]
            return code.co_name
        first = frame.f_locals.get(code.co_varnames[0])
        klass = first if code.co_varnames[0] == "cls" else type(first)
        for c in getattr(klass, "__mro__", ()):
            f = c.__dict__.get(code.co_name)
            f = getattr(f, "__func__", f)
            if getattr(f, "__code__", None) is code:
                return c.__name__ + "." + code.co_name
    return code.co_name


_qualnames = {}


def _qualname_of(code):
    """__qualname__ of the function running `code`; None before 3.3."""
    if code not in _qualnames:
        name = None
        for ref in gc.get_referrers(code):
            if getattr(ref, "__code__", None) is code:
                name = getattr(ref, "__qualname__", None)
                break
        _qualnames[code] = name
    return _qualnames[code]


def stack_of(frame):
    """Frames from the root down to `frame`, as the truth lists them."""
    frames = []
    while frame is not None:
        code = frame.f_code
        frames.append({"function": frame_name(frame), "file": code.co_filename,
                       "line": frame.f_lineno})
        frame = frame.f_back
    frames.reverse()
    return frames


def native_tid():
    if hasattr(threading, "get_native_id"):
        return threading.get_native_id()
    # Before 3.8: /proc/thread-self links to "<pid>/task/<tid>" (Linux 3.17+).
    return int(os.readlink("/proc/thread-self").rsplit("/", 1)[1])


def thread_ident():
    return threading.current_thread().ident


def read_comm(tid):
    with open("/proc/self/task/%d/comm" % tid) as f:
        return f.read().rstrip("\n")


def set_comm(tid, name):
    with open("/proc/self/task/%d/comm" % tid, "w") as f:
        f.write(name)


def marked_line(code, marker):
    """The one line of `code` whose source text ends with `marker`.

    Only lines in the compiler's own line table of `code` count, so the
    marker of a nested or neighbouring function is never taken, and a marker
    that drifted off real code fails loudly instead of giving a wrong truth.
    """
    code_lines = set(line for _, line in dis.findlinestarts(code) if line is not None)
    with open(code.co_filename) as f:
        text = f.read().split("\n")
    found = [n for n in sorted(code_lines)
             if 0 < n <= len(text) and text[n - 1].rstrip().endswith(marker)]
    if len(found) != 1:
        raise RuntimeError("%s: %d lines marked %r in %s, need one" %
                           (code.co_filename, len(found), marker, code.co_name))
    return found[0]


def thread_truth(frame, leaf_marker):
    """The truth of the calling thread whose leaf frame is `frame`."""
    stack = stack_of(frame)
    stack[-1]["line"] = marked_line(frame.f_code, leaf_marker)
    tid = native_tid()
    return {"tid": tid, "ident": thread_ident(), "name": read_comm(tid), "stack": stack}


def guarded(function, *args):
    """Runs `function`; any exception ends the whole process with status 70.

    A workload whose truth cannot be computed must die, not leave a test
    waiting for a line that never comes.
    """
    try:
        return function(*args)
    except BaseException:
        traceback.print_exc()
        sys.stderr.flush()
        os._exit(70)


def emit(obj):
    with _print_lock:
        print(json.dumps(obj, sort_keys=True))
        sys.stdout.flush()


def emit_truth(workload, threads, extra=None):
    truth = {"kind": "truth", "workload": workload, "pid": os.getpid(),
             "python": python_version(), "threads": threads}
    if extra:
        truth.update(extra)
    emit(truth)


def selfcheck_enabled():
    return os.environ.get("KRAIT_WORKLOAD_SELFCHECK") == "1"


def selfcheck_count():
    return int(os.environ.get("KRAIT_WORKLOAD_SELFCHECK_COUNT", "100"))


def start_selfcheck(threads, end_info=None):
    """Observes `threads` (truth entries) from a helper thread, if enabled.

    `end_info` is called at the end for workload-specific facts to report.
    Returns the helper thread (None when disabled), for a workload that ends
    on its own to outlive it.
    """
    if not selfcheck_enabled():
        return None

    count = selfcheck_count()

    def observe():
        for _ in range(count):
            time.sleep(SELFCHECK_INTERVAL)
            frames = sys._current_frames()
            seen = []
            for t in threads:
                frame = frames.get(t["ident"])
                seen.append({"tid": t["tid"], "stack": stack_of(frame) if frame else []})
            del frames
            emit({"kind": "observation", "threads": seen})
        end = {"kind": "selfcheck_end", "observations": count}
        if end_info is not None:
            end.update(end_info())
        emit(end)

    helper = threading.Thread(target=guarded, args=(observe,), name="selfcheck")
    helper.daemon = True
    helper.start()
    return helper


class Lane(object):
    """Per-thread bookkeeping, run once per lap of a hot loop (rarely)."""

    def __init__(self, deadline=None, on_first_lap=None):
        self.running = True
        self.laps = 0
        self.deadline = deadline
        self.on_first_lap = on_first_lap

    def lap(self):
        self.laps += 1
        if self.laps == 1 and self.on_first_lap is not None:
            guarded(self.on_first_lap, sys._getframe(1))
        if self.deadline is not None and time.time() >= self.deadline:
            self.running = False
# --- end common --------------------------------------------------------------

LAP = 1000000


def spin(lane):
    while lane.running:
        n = 0
        while n < LAP: n += 1  # krait:hot
        lane.lap()
        gevent.sleep(0)


def alpha_leaf(lane):
    spin_alpha(lane)


def spin_alpha(lane):
    while lane.running:
        n = 0
        while n < LAP: n += 1  # krait:hot
        lane.lap()
        gevent.sleep(0)


def alpha_middle(lane):
    alpha_leaf(lane)


def alpha_run(lane):
    alpha_middle(lane)


class Beta(object):
    def run(self, lane):
        self.hot(lane)

    def hot(self, lane):
        while lane.running:
            n = 0
            while n < LAP: n += 1  # krait:hot
            lane.lap()
            gevent.sleep(0)


def gamma_inner(lane, depth):
    if depth > 0:
        return gamma_inner(lane, depth - 1)
    spin(lane)


def gamma_run(lane):
    gamma_inner(lane, 3)


RUNS = [alpha_run, Beta().run, gamma_run]


def main():
    parser = argparse.ArgumentParser(description="greenlets burning CPU")
    parser.add_argument("--greenlets", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=None, help="exit after about S s")
    args = parser.parse_args()
    deadline = None if args.seconds is None else time.time() + args.seconds

    main_frame = sys._getframe()
    reported = {}

    def first_lap(name, frame):
        stack = stack_of(frame)
        stack[-1]["line"] = marked_line(frame.f_code, HOT_MARKER)
        reported[name] = {"name": name, "root": stack[0]["function"], "stack": stack}
        if len(reported) == args.greenlets:
            tid = native_tid()
            threads = [{"tid": tid, "ident": thread_ident(), "name": read_comm(tid),
                        "stack": stack_of(main_frame)}]
            emit_truth("greenlets", threads,
                       {"greenlets": [reported[k] for k in sorted(reported)]})

    lanes = []
    for i in range(args.greenlets):
        name = "gl-%d" % i
        lane = Lane(deadline, lambda frame, name=name: first_lap(name, frame))
        lanes.append(gevent.spawn(RUNS[i % len(RUNS)], lane))
    gevent.joinall(lanes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
