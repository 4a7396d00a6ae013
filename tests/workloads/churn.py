"""Code objects that are created, run briefly and freed, over and over, so
that new code objects land on the addresses of freed ones.

    python churn.py [--k-min A] [--k-max B] [--iterations N] [--seconds S]

Each round compiles generated source for one function whose name, file name
and first line all encode the same integer K: function f_K in file
"churn_K.py" at line 7K+1 (the source is padded with 7K newlines). K cycles
from A to B. The function spins N times in a one-line loop, then it and its
code are dropped; nothing keeps them alive (the namespace does not hold the
function, so no reference cycle waits for the garbage collector), and the
next round's code object usually reuses the freed memory. A profiler that
caches code objects by address alone then reports a stale name, file or
line, which the rule below exposes.

Once the first round has run, one JSON line (the truth) gives the thread's
static stack, root first, down to the frame that calls the generated
function, plus "generated": the naming rule as regular expressions and line
offsets (line = 7K + offset), so a test can check that every sampled
generated frame is self-consistent. KRAIT_WORKLOAD_SELFCHECK=1 adds the
observation lines described in chain.py and, at the end, how many code
objects were made and how many reused an address that had held another K's
code.
"""

from __future__ import print_function

import argparse
import sys
import time

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

STRIDE = 7
TEMPLATE = "def f_%d(limit):\n    n = 0\n    while n < limit: n += 1\n    return n\n"
FUNCTION_REGEX = "^f_([0-9]+)$"
FILE_REGEX = "^churn_([0-9]+)\\.py$"


def template_offset(fragment):
    """1-based line of `fragment` within TEMPLATE, the def line being 1."""
    for number, text in enumerate(TEMPLATE.split("\n")):
        if fragment in text:
            return number + 1
    raise RuntimeError("%r is not in the template" % fragment)


def generate(k):
    source = "\n" * (STRIDE * k) + TEMPLATE % k
    code = compile(source, "churn_%d.py" % k, "exec")
    namespace = {}
    exec(code, namespace)
    # Taken out of its namespace so function -> globals is the only edge and
    # dropping the function frees everything at once.
    return namespace.pop("f_%d" % k)


class Ledger(object):
    """Counts code objects made and addresses that come back for another K."""

    def __init__(self):
        self.made = 0
        self.reused = 0
        self.owner = {}

    def record(self, k, code):
        self.made += 1
        address = id(code)
        previous = self.owner.get(address)
        if previous is not None and previous != k:
            self.reused += 1
        self.owner[address] = k

    def report(self):
        return {"code_objects": self.made, "address_reuses": self.reused}


def check_rule(function, k, rule):
    """The generated code must follow the rule the truth states."""
    code = function.__code__
    first = rule["first_line"]["k_times"] * k + rule["first_line"]["plus"]
    hot = rule["hot_line"]["k_times"] * k + rule["hot_line"]["plus"]
    lines = set(line for _, line in dis.findlinestarts(code) if line is not None)
    if code.co_firstlineno != first or hot not in lines or code_name(code) != "f_%d" % k:
        raise RuntimeError("generated f_%d breaks its rule: first line %d, lines %r" %
                           (k, code.co_firstlineno, sorted(lines)))


def churn_loop(lane, ledger, k_min, k_max, iterations):
    k = k_min
    while lane.running:
        function = generate(k)
        ledger.record(k, function.__code__)
        function(iterations)  # krait:call
        del function
        k = k + 1 if k < k_max else k_min
        lane.lap()


def main():
    parser = argparse.ArgumentParser(description="code objects born and freed in a loop")
    parser.add_argument("--k-min", type=int, default=1)
    parser.add_argument("--k-max", type=int, default=500)
    parser.add_argument("--iterations", type=int, default=500000,
                        help="loop iterations per generated function")
    parser.add_argument("--seconds", type=float, default=None, help="exit after about S s")
    args = parser.parse_args()
    if not 0 <= args.k_min <= args.k_max:
        parser.error("need 0 <= --k-min <= --k-max")
    deadline = None if args.seconds is None else time.time() + args.seconds

    last = template_offset("return")
    rule = {
        "function_regex": FUNCTION_REGEX,
        "file_regex": FILE_REGEX,
        "first_line": {"k_times": STRIDE, "plus": 1},
        "hot_line": {"k_times": STRIDE, "plus": template_offset("while n < limit")},
        "last_line": {"k_times": STRIDE, "plus": last},
        "k_min": args.k_min,
        "k_max": args.k_max,
    }
    check_rule(generate(args.k_max), args.k_max, rule)
    ledger = Ledger()

    def first_lap(frame):
        threads = [thread_truth(frame, CALL_MARKER)]
        emit_truth("churn", threads, {"generated": rule})
        start_selfcheck(threads, ledger.report)

    churn_loop(Lane(deadline, first_lap), ledger, args.k_min, args.k_max, args.iterations)
    return 0


if __name__ == "__main__":
    sys.exit(main())
