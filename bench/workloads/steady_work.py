"""Pure-Python CPU work at a fixed call depth, for as long as it is left running.

    python steady_work.py --frames F --counter FILE

<module> -> main -> descend (F - 6 frames) -> work -> compute -> step -> mix,
F Python frames at the leaf, the same
recurrence as fixed_work.py, in units of a fixed number of iterations. After
each unit the number of units done so far goes into FILE (8 bytes, little
endian, through a shared mapping), so a driver outside reads the work rate
over any window without stopping or signalling the process: a profiler that
attaches later (austin, CPython's profiling.sampling, krait -p) sees one
steady stack at a known depth, and the rate under it against the rate with
none is the slowdown it causes. One JSON line on stdout once the first unit
is done says the process is running.
"""

import argparse
import json
import mmap
import os
import struct
import sys

MODULUS = 1000003
UNIT_ITERATIONS = 20000


def mix(a, b):
    return (a * 31 + b) % MODULUS


def step(x, i):
    y = mix(x, i)
    if y & 1:
        y = mix(y, y >> 3)
    return y


def compute(x, iterations):
    for i in range(iterations):
        x = step(x, i)
    return x


def work(counter):
    units = 0
    x = 1
    while True:
        x = compute(x, UNIT_ITERATIONS)
        units += 1
        struct.pack_into("<Q", counter, 0, units)
        if units == 1:
            print(json.dumps({"kind": "steady_work", "pid": os.getpid(),
                              "python": sys.version.split()[0]}), flush=True)


def descend(remaining, counter):
    if remaining > 0:
        return descend(remaining - 1, counter)
    return work(counter)


def main():
    parser = argparse.ArgumentParser(description="steady CPU-bound workload")
    parser.add_argument("--frames", type=int, default=30, help="Python frames at the leaf (>= 7)")
    parser.add_argument("--counter", required=True)
    args = parser.parse_args()
    if args.frames < 7:
        parser.error("--frames must be at least 7")
    fd = os.open(args.counter, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.ftruncate(fd, 8)
        counter = mmap.mmap(fd, 8)
    finally:
        os.close(fd)
    descend(args.frames - 7, counter)


if __name__ == "__main__":
    sys.exit(main())
