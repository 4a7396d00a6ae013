"""asyncio tasks that wait in known ways, for `krait dump --tasks`, reporting
each task's own coroutine stack and who awaits whom.

    python asyncio_tasks.py          (CPython 3.11+: asyncio.TaskGroup)

One event loop on the main thread runs these tasks:

  "sleeper"        sleeper > nap > asyncio.sleep(3600)
  "reader"         reader > read_socket > loop.sock_recv on a socketpair
                   nobody writes to
  "gather-parent"  awaits asyncio.gather("gather-a", "gather-b"); each child
                   is gather_child > nap > asyncio.sleep
  "group-parent"   waits at the end of an `async with asyncio.TaskGroup()`
                   for its child "group-child" (group_child > nap > sleep)
  "main"           the task of asyncio.run: awaits the task "spinner"
  "spinner"        spinner > spin_inner, a one-line hot loop that never
                   yields: the running task, with the loop blocked in it

Once every other task is suspended where it waits, "spinner" starts, and on
its first lap prints one JSON line (the truth): the loop thread's stack
(root first, leaf at the hot loop), and per task its name, state
("running" or "pending"), its coroutine stack root first (the task's own
coroutine first) as the interpreter gives it (cr_frame, cr_await; for the
running task its frames up to the task's coroutine), the names of the
tasks awaiting it, and the type name of the future it waits on. Every line
of this file in a stack is checked against its marker ("# krait:call" at
an await, "# krait:hot" at the loop): a marker that drifted kills the
workload rather than giving a wrong truth. Where the interpreter records
who awaits whom itself (3.14+: Task._asyncio_awaited_by), that must agree
with the construction too. The process then runs until killed.
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

import asyncio
import socket
import types

LAP = 1000000
HERE = os.path.abspath(__file__)


async def nap():
    await asyncio.sleep(3600)  # krait:call


async def sleeper():
    await nap()  # krait:call


async def read_socket(sock):
    loop = asyncio.get_running_loop()
    return await loop.sock_recv(sock, 16)  # krait:call


async def reader(sock):
    await read_socket(sock)  # krait:call


async def gather_child():
    await nap()  # krait:call


async def gather_parent():
    first = asyncio.create_task(gather_child(), name="gather-a")
    second = asyncio.create_task(gather_child(), name="gather-b")
    await asyncio.gather(first, second)  # krait:call


async def group_child():
    await nap()  # krait:call


async def group_parent():
    async with asyncio.TaskGroup() as group:  # krait:call
        group.create_task(group_child(), name="group-child")


async def spin_inner(lane):
    limit = LAP
    n = 0
    while lane.running:
        n = 0
        while n < limit: n += 1  # krait:hot
        lane.lap()
    return n


async def spinner(lane):
    await spin_inner(lane)  # krait:call


# Who awaits whom, by construction: task name -> names of its awaiters.
AWAITED_BY = {
    "spinner": ["main"],
    "gather-a": ["gather-parent"],
    "gather-b": ["gather-parent"],
    "group-child": ["group-parent"],
}
SUSPENDED = ["main", "sleeper", "reader", "gather-parent", "gather-a", "gather-b",
             "group-parent", "group-child"]


def frame_entry(frame, marker):
    """A frame of a task's stack; a line of this file must carry `marker`
    (None: not checked)."""
    code = frame.f_code
    line = frame.f_lineno
    if code.co_filename == HERE and marker is not None:
        want = marked_line(code, marker)
        if line != want:
            raise RuntimeError("%s is at line %d, its marker at %d" % (code_name(code), line, want))
    return {"function": frame_name(frame), "file": code.co_filename, "line": line}


def coroutine_frames(task):
    """The frames of a suspended task's coroutine chain, outermost first.

    As CPython's own readers follow it: the task's coroutine, then what it
    awaits while that is a coroutine too (a Future's iterator ends it).
    """
    coro = task.get_coro()
    kind = type(coro)
    frames = []
    while type(coro) is kind and coro.cr_frame is not None:
        frames.append(coro.cr_frame)
        coro = coro.cr_await
    return frames


def settled(names):
    """True once every task of `names` waits on a future at the end of its chain."""
    tasks = dict((t.get_name(), t) for t in asyncio.all_tasks())
    for name in names:
        task = tasks.get(name)
        if task is None or task.done():
            return False
        coro = task.get_coro()
        while isinstance(coro, types.CoroutineType):
            if coro.cr_await is None:
                return False
            coro = coro.cr_await
    return True


def interpreter_awaited_by(task):
    """Names of the tasks the interpreter records as awaiting `task` (3.14+)."""
    awaiters = getattr(task, "_asyncio_awaited_by", None)
    if awaiters is None:
        return None
    return sorted(t.get_name() for t in awaiters)


def task_truth(task, state, frames):
    """A task's truth; a running task's leaf is put at its hot loop."""
    stack = [frame_entry(f, CALL_MARKER) for f in frames[:-1]]
    if state == "running":
        stack.append(frame_entry(frames[-1], None))
        stack[-1]["line"] = marked_line(frames[-1].f_code, HOT_MARKER)
    else:
        stack.append(frame_entry(frames[-1], CALL_MARKER))
    awaited_by = sorted(AWAITED_BY.get(task.get_name(), []))
    recorded = interpreter_awaited_by(task)
    if recorded is not None and recorded != awaited_by:
        raise RuntimeError("%s: the interpreter says awaited by %r, built as %r" %
                           (task.get_name(), recorded, awaited_by))
    waiter = getattr(task, "_fut_waiter", None)
    return {"name": task.get_name(), "state": state, "stack": stack, "awaited_by": awaited_by,
            "waiting_on": type(waiter).__name__ if waiter is not None else ""}


def report(spin_task, leaf):
    """The truth, from the spinner's first lap (`leaf`: spin_inner's frame)."""
    tasks = []
    own = spin_task.get_coro().cr_frame
    frames = []
    frame = leaf
    while frame is not None:
        frames.append(frame)
        if frame is own:
            break
        frame = frame.f_back
    if frame is None:
        raise RuntimeError("the spinner's coroutine frame is not on its stack")
    frames.reverse()
    tasks.append(task_truth(spin_task, "running", frames))
    by_name = dict((t.get_name(), t) for t in asyncio.all_tasks())
    for name in SUSPENDED:
        frames = coroutine_frames(by_name[name])
        tasks.append(task_truth(by_name[name], "pending", frames))
    thread = thread_truth(leaf, HOT_MARKER)
    emit_truth("asyncio_tasks", [thread], {"tasks": tasks})


async def main_async():
    main_task = asyncio.current_task()
    main_task.set_name("main")
    quiet, _other = socket.socketpair()
    quiet.setblocking(False)
    waiting = [asyncio.create_task(sleeper(), name="sleeper"),
               asyncio.create_task(reader(quiet), name="reader"),
               asyncio.create_task(gather_parent(), name="gather-parent"),
               asyncio.create_task(group_parent(), name="group-parent")]
    # Each pass of the loop runs every ready task one step; a few passes
    # bring each one to its await. sleep(0) yields, it does not wait.
    deadline = time.time() + 60
    while not settled([n for n in SUSPENDED if n != "main"]):
        if time.time() > deadline:
            raise RuntimeError("the tasks did not reach their awaits")
        await asyncio.sleep(0)

    holder = []
    lane = Lane(None, lambda frame: report(holder[0], frame))
    spin_task = asyncio.create_task(spinner(lane), name="spinner")
    holder.append(spin_task)
    await spin_task  # krait:call
    return waiting


def main():
    parser = argparse.ArgumentParser(description="asyncio tasks waiting in known ways")
    parser.parse_args()
    if sys.version_info < (3, 11):
        sys.stderr.write("asyncio_tasks.py needs Python 3.11+ (asyncio.TaskGroup)\n")
        return 2
    guarded(asyncio.run, main_async())
    return 0


if __name__ == "__main__":
    sys.exit(main())
