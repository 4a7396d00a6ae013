"""A process forked from C while a second Python thread waits, as a server
that loads its application and then calls fork() does.

    python fork_from_c.py --ext-dir DIR

DIR holds krait_cext.so (tests/fixtures/cext/krait_cext.c). A thread,
`parent_thread_waits`, blocks on an event; the main thread calls libc's
fork() through ctypes, so none of CPython's after-fork code runs and the
child keeps both thread states. glibc hands the child the waiting thread's
stack for its next thread: the child starts a pthread of C only
(krait_cext.start_native_thread), whose pthread_t is then the one the
waiting thread's stale state still holds. The child's main thread burns CPU
in `child_main_burns` for good. The child prints one JSON line:

    {"kind": "child", "pid": P, "tid": P, "stack": [...root first...],
     "native_tid": T, "stale_ident_reused": true, "stale_function":
     "parent_thread_waits"}

"stack" ends at child_main_burns's `# krait:hot` line; "function" is
co_qualname on 3.11+, else co_name. The parent prints {"kind": "parent",
"pid": P} and waits; both run until killed.
"""

import argparse
import ctypes
import json
import os
import sys
import threading
import time

HOT_MARKER = "# krait:" + "hot"


def code_name(code):
    return getattr(code, "co_qualname", code.co_name)


def hot_line():
    with open(os.path.abspath(__file__)) as f:
        for number, text in enumerate(f, 1):
            if text.rstrip().endswith(HOT_MARKER):
                return number
    raise RuntimeError("no hot line in " + __file__)


def emit(obj):
    os.write(1, (json.dumps(obj) + "\n").encode())


def stack_of(frame):
    stack = []
    while frame is not None:
        code = frame.f_code
        stack.append({"function": code_name(code), "file": code.co_filename,
                      "line": frame.f_lineno})
        frame = frame.f_back
    stack.reverse()
    return stack


def parent_thread_waits(event):
    event.wait()


def child_main_burns(report):
    stack = stack_of(sys._getframe())
    stack[-1]["line"] = hot_line()
    report["stack"] = stack
    emit(report)
    n = 0
    while True:
        n = 0
        while n < 100000: n += 1  # krait:hot


def main():
    parser = argparse.ArgumentParser(description="a child forked from C")
    parser.add_argument("--ext-dir", required=True)
    args = parser.parse_args()
    sys.path.insert(0, args.ext_dir)
    import krait_cext

    never = threading.Event()
    waiter = threading.Thread(target=parent_thread_waits, args=(never,), daemon=True)
    waiter.start()  # returns once the thread runs, its state registered
    stale_ident = waiter.ident
    # PyDLL keeps the GIL across the call: the child starts holding it.
    pid = ctypes.PyDLL(None).fork()
    if pid < 0:
        raise OSError("fork failed")
    if pid == 0:
        native = krait_cext.start_native_thread()
        child_main_burns({"kind": "child", "pid": os.getpid(), "tid": os.getpid(),
                          "native_tid": native,
                          "stale_ident_reused": krait_cext.native_thread_ident() == stale_ident,
                          "stale_function": code_name(parent_thread_waits.__code__)})
    emit({"kind": "parent", "pid": os.getpid(), "child": pid})
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    sys.exit(main())
