"""multiprocessing children that burn CPU and report their own stacks.

    python mp_children.py --method fork|spawn|forkserver [--children 2] [--seconds 1.5]

The parent starts --children processes with the given start method and
waits for them. Each child prints one JSON line, its truth, when its hot loop
starts, then runs it for --seconds of its own CPU time and exits 0:

    {"kind": "child", "method": "fork", "pid": 4243, "tid": 4243,
     "stack": [...root first, the leaf at spin's `# krait:hot` line...],
     "startup_cpu_s": 0.08}

"stack" is what sys._getframe saw in the child: the multiprocessing frames
that started it (which differ by start method) down to work > burn > spin;
"function" is co_qualname on 3.11+, else co_name. "startup_cpu_s" is the
CPU time the child spent before its hot loop (a spawned child imports and
unpickles first; its samples there have other stacks). The parent's first line is
{"kind": "parent", "pid": P}, its last {"kind": "end", "exitcodes": [...]}.
Lines are written whole with one os.write each, so children never interleave.
"""

import argparse
import json
import multiprocessing
import os
import sys
import threading
import time

LAP = 20000
CHECK_EVERY = 8
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


def spin(deadline, method):
    stack = stack_of(sys._getframe())
    stack[-1]["line"] = hot_line()
    emit({"kind": "child", "method": method, "pid": os.getpid(),
          "tid": threading.get_native_id(), "stack": stack,
          "startup_cpu_s": time.process_time()})
    limit = LAP
    laps = 0
    n = 0
    while True:
        n = 0
        while n < limit: n += 1  # krait:hot
        laps += 1
        if laps % CHECK_EVERY == 0 and time.process_time() >= deadline:
            return n


def burn(seconds, method):
    return spin(time.process_time() + seconds, method)


def work(seconds, method):
    burn(seconds, method)


def main():
    parser = argparse.ArgumentParser(description="multiprocessing children burning CPU")
    parser.add_argument("--method", required=True, choices=["fork", "spawn", "forkserver"])
    parser.add_argument("--children", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=1.5)
    args = parser.parse_args()
    emit({"kind": "parent", "pid": os.getpid()})
    context = multiprocessing.get_context(args.method)
    children = [context.Process(target=work, args=(args.seconds, args.method))
                for _ in range(args.children)]
    for child in children:
        child.start()
    for child in children:
        child.join()
    emit({"kind": "end", "exitcodes": [child.exitcode for child in children]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
