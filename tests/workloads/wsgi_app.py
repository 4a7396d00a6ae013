"""A WSGI application that burns CPU per request and reports its own stack.

    uwsgi --plugin python3 --wsgi-file wsgi_app.py ...

GET /burn?ms=M runs application > handle > burn > spin for about M
milliseconds of the calling thread's CPU time (50 by default, at most 2000),
nearly all of it on spin's hot line (marked `# krait:hot`), and answers one
JSON line, the truth of that request:

    {"kind": "request", "pid": 4242, "tid": 4243, "ms": 50,
     "stack": [{"function": "application", "file": "/abs/wsgi_app.py",
                "line": 90}, ..., {"function": "spin", ..., "line": 61}]}

"stack" is root first, as sys._getframe saw it in the request's thread, the
leaf's line being the hot loop's; "function" is co_qualname on 3.11+, else
co_name. "pid" and "tid" are the kernel ids of the worker process and of the
thread that served the request: the server forks its workers, so these are
what a profiler must attribute the samples to. Any other path answers 404.

The module is loaded by the server (in its master, or in each worker with
--lazy-apps); it has no main. With WSGI_APP_BACKGROUND=1 in its environment
it also starts a Python thread that waits forever (as metrics and tracing
agents do): loaded in the master, the workers inherit that thread's state,
which names a thread of the master and is run by no thread of theirs.
"""

import json
import os
import sys
import threading
import time

LAP = 20000
# CPU time is a system call: it is checked every CHECK_EVERY laps only, so
# that nearly every sample of a busy request sits on the hot line.
CHECK_EVERY = 8
HOT_MARKER = "# krait:" + "hot"
MAX_MS = 2000


def code_name(code):
    return getattr(code, "co_qualname", code.co_name)


def hot_line():
    with open(os.path.abspath(__file__)) as f:
        for number, text in enumerate(f, 1):
            if text.rstrip().endswith(HOT_MARKER):
                return number
    raise RuntimeError("no hot line in " + __file__)


HOT_LINE = hot_line()


def native_tid():
    if hasattr(threading, "get_native_id"):
        return threading.get_native_id()
    return os.getpid()


def stack_of(frame):
    stack = []
    while frame is not None:
        code = frame.f_code
        stack.append({"function": code_name(code), "file": code.co_filename,
                      "line": frame.f_lineno})
        frame = frame.f_back
    stack.reverse()
    return stack


def spin(deadline, report):
    stack = stack_of(sys._getframe())
    stack[-1]["line"] = HOT_LINE
    report["stack"] = stack
    limit = LAP
    laps = 0
    n = 0
    while True:
        n = 0
        while n < limit: n += 1  # krait:hot
        laps += 1
        if laps % CHECK_EVERY == 0 and time.thread_time() >= deadline:
            return n


def burn(ms, report):
    return spin(time.thread_time() + ms / 1000.0, report)


def handle(ms):
    report = {"kind": "request", "pid": os.getpid(), "tid": native_tid(), "ms": ms}
    burn(ms, report)
    return json.dumps(report) + "\n"


def requested_ms(query):
    for part in query.split("&"):
        key, _, value = part.partition("=")
        if key == "ms" and value.isdigit():
            return min(int(value), MAX_MS)
    return 50


def wait_forever():
    event = threading.Event()
    while True:
        event.wait(3600)


if os.environ.get("WSGI_APP_BACKGROUND") == "1":
    threading.Thread(target=wait_forever, name="background", daemon=True).start()


def application(environ, start_response):
    if environ.get("PATH_INFO") != "/burn":
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found\n"]
    body = handle(requested_ms(environ.get("QUERY_STRING", ""))).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]
