"""Two Python processes passing one byte back and forth over two pipes.

    python ping_pong.py --counter FILE

Every round trip blocks each side once in a pipe read, so the machine does
two context switches of Python threads per round trip, as fast as the
kernel wakes them: the workload off-CPU profiling costs the most on. The
parent counts round trips into FILE (8 bytes, little endian, through a
shared mapping) so a driver reads the rate over any window; one JSON line on
stdout once the first round trips are done says it is running. Both sides
sit a few frames deep so the sampler has a Python stack to walk at each
switch.
"""

import argparse
import json
import mmap
import os
import struct
import sys


def bounce(rfd, wfd):
    while True:
        if not os.read(rfd, 1):
            return
        os.write(wfd, b"x")


def serve(rfd, wfd, counter):
    trips = 0
    while True:
        os.write(wfd, b"x")
        if not os.read(rfd, 1):
            return
        trips += 1
        if trips % 64 == 0:
            struct.pack_into("<Q", counter, 0, trips)
            if trips == 64:
                print(json.dumps({"kind": "ping_pong", "pid": os.getpid(),
                                  "python": sys.version.split()[0]}), flush=True)


def side(depth, fn, *args):
    if depth > 0:
        return side(depth - 1, fn, *args)
    return fn(*args)


def main():
    parser = argparse.ArgumentParser(description="context-switch-heavy workload")
    parser.add_argument("--counter", required=True)
    parser.add_argument("--depth", type=int, default=10)
    args = parser.parse_args()
    fd = os.open(args.counter, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.ftruncate(fd, 8)
        counter = mmap.mmap(fd, 8)
    finally:
        os.close(fd)
    to_child_r, to_child_w = os.pipe()
    to_parent_r, to_parent_w = os.pipe()
    if os.fork() == 0:
        os.close(to_child_w)
        os.close(to_parent_r)
        side(args.depth, bounce, to_child_r, to_parent_w)
        os._exit(0)
    os.close(to_child_r)
    os.close(to_parent_w)
    side(args.depth, serve, to_parent_r, to_child_w, counter)


if __name__ == "__main__":
    sys.exit(main())
