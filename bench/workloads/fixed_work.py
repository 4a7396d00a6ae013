"""A fixed amount of pure-Python CPU work at a realistic call depth.

    python fixed_work.py [--iterations N] [--depth D]

<module> -> main -> run -> descend (D frames) -> compute -> step: compute
runs N iterations of a small integer recurrence (a few calls and some
arithmetic per iteration), so the work is the same on every run and the
checksum proves it. No I/O and no sleeping while the work runs: the wall and
CPU time of the process are the cost of the work (plus interpreter start-up,
also fixed). One JSON line at the end reports the checksum and the time the
work took as the process saw it; the benchmark driver measures from outside.

The overhead benchmark (bench/run) starts this under each condition; the
default size takes about 3 s on this project's 2-vCPU VM with CPython 3.12.
"""

import argparse
import json
import sys
import time

MODULUS = 1000003


def mix(a, b):
    return (a * 31 + b) % MODULUS


def step(x, i):
    y = mix(x, i)
    if y & 1:
        y = mix(y, y >> 3)
    return y


def compute(iterations):
    x = 1
    for i in range(iterations):
        x = step(x, i)
    return x


def descend(remaining, iterations):
    if remaining > 0:
        return descend(remaining - 1, iterations)
    return compute(iterations)


def run(depth, iterations):
    return descend(depth, iterations)


def main():
    parser = argparse.ArgumentParser(description="fixed-work CPU-bound workload")
    parser.add_argument("--iterations", type=int, default=16000000)
    # 27 recursion frames + <module>, main, run, compute, step: ~32 frames deep.
    parser.add_argument("--depth", type=int, default=27)
    args = parser.parse_args()
    wall0 = time.perf_counter()
    cpu0 = time.process_time()
    checksum = run(args.depth, args.iterations)
    print(json.dumps({"kind": "fixed_work", "iterations": args.iterations,
                      "depth": args.depth, "checksum": checksum,
                      "work_wall_s": time.perf_counter() - wall0,
                      "work_cpu_s": time.process_time() - cpu0,
                      "python": sys.version.split()[0]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
