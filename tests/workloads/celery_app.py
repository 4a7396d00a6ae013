"""A Celery application whose task burns CPU and reports its own stack.

    CELERY_APP_DIR=/tmp/x python3 -m celery -A celery_app worker --pool prefork ...
    CELERY_APP_DIR=/tmp/x python3 celery_app.py send COUNT MS

The broker is kombu's filesystem transport under $CELERY_APP_DIR/queue (no
server); there is no result backend. The task `burn(ms)` runs
burn > spin for about ms milliseconds of the pool child's CPU time, nearly
all of it on spin's hot line (marked `# krait:hot`), then writes its truth
as one JSON file $CELERY_APP_DIR/reports/<task id>.json (written whole, then
renamed into place, so a reader never sees half of one):

    {"kind": "task", "pid": 4243, "tid": 4243, "ms": 200,
     "stack": [...root first, the leaf at spin's hot line...]}

"stack" is what sys._getframe saw in the pool child: billiard's and
Celery's frames down to burn > spin; "function" is co_qualname on 3.11+,
else co_name. `send COUNT MS` queues COUNT such tasks and exits.
"""

import json
import os
import sys
import threading
import time

from celery import Celery

LAP = 20000
CHECK_EVERY = 8
HOT_MARKER = "# krait:" + "hot"
MAX_MS = 5000

DIR = os.environ["CELERY_APP_DIR"]
QUEUE = os.path.join(DIR, "queue")
PROCESSED = os.path.join(DIR, "processed")
REPORTS = os.path.join(DIR, "reports")
for folder in (QUEUE, PROCESSED, REPORTS):
    os.makedirs(folder, exist_ok=True)

app = Celery("celery_app", broker="filesystem://")
app.conf.update(
    broker_transport_options={"data_folder_in": QUEUE, "data_folder_out": QUEUE,
                              "processed_folder": PROCESSED, "store_processed": False,
                              "polling_interval": 0.05},
    task_ignore_result=True,
    worker_prefetch_multiplier=1,
    worker_hijack_root_logger=False,
)


def code_name(code):
    return getattr(code, "co_qualname", code.co_name)


def hot_line():
    with open(os.path.abspath(__file__)) as f:
        for number, text in enumerate(f, 1):
            if text.rstrip().endswith(HOT_MARKER):
                return number
    raise RuntimeError("no hot line in " + __file__)


HOT_LINE = hot_line()


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
    laps = 0
    n = 0
    while True:
        n = 0
        while n < LAP: n += 1  # krait:hot
        laps += 1
        if laps % CHECK_EVERY == 0 and time.thread_time() >= deadline:
            return n


@app.task(name="celery_app.burn", bind=True)
def burn(self, ms):
    ms = min(int(ms), MAX_MS)
    report = {"kind": "task", "pid": os.getpid(), "tid": threading.get_native_id(), "ms": ms}
    spin(time.thread_time() + ms / 1000.0, report)
    path = os.path.join(REPORTS, "%s.json" % self.request.id)
    with open(path + ".tmp", "w") as f:
        f.write(json.dumps(report) + "\n")
    os.rename(path + ".tmp", path)


def main():
    if len(sys.argv) != 4 or sys.argv[1] != "send":
        sys.exit("usage: celery_app.py send COUNT MS")
    for _ in range(int(sys.argv[2])):
        burn.delay(int(sys.argv[3]))


if __name__ == "__main__":
    main()
