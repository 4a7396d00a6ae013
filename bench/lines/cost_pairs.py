#!/usr/bin/python3.11
"""The sampler's per-sample cost of two krait binaries, in interleaved pairs.

    sudo bench/lines/cost_pairs.py OLD_KRAIT NEW_KRAIT [PAIRS] [--out FILE]

One chain.py --depth 50 process (pyenv 3.12.1) runs throughout; each pair
records it for 3 s at 999 Hz with --measure-sampler-cost with each binary
(the order alternates between pairs), in both stack modes. Prints the
median over pairs of each run's median self-timed cost and writes every
run's figures as JSON (--out, default sampler-cost-pairs.json). Steady state:
after the first samples every code object has been seen, so this is the cost
of a sample, not of a first sight.
"""

import argparse
import json
import os
import statistics
import subprocess
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PYTHON = "/root/.pyenv/versions/3.12.1/bin/python"
CHAIN = os.path.join(REPO, "tests", "workloads", "chain.py")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("old")
    p.add_argument("new")
    p.add_argument("pairs", type=int, nargs="?", default=8)
    p.add_argument("--out", default="sampler-cost-pairs.json")
    a = p.parse_args()
    scratch = tempfile.mkdtemp(prefix="krait-cost-")
    w = subprocess.Popen([PYTHON, CHAIN, "--depth", "50"], stdout=subprocess.PIPE, text=True)
    w.stdout.readline()  # its truth: the chain is built
    res = {"old": {}, "new": {}}
    try:
        for i in range(a.pairs):
            for mode in ("python", "mixed"):
                order = [("old", a.old), ("new", a.new)]
                if i % 2:
                    order.reverse()
                for tag, binary in order:
                    stats = os.path.join(scratch, "%s-%s-%d.json" % (tag, mode, i))
                    subprocess.run([binary, "record", "-p", str(w.pid), "-r", "999", "-d", "3",
                                    "--stacks", mode, "--measure-sampler-cost",
                                    "-o", os.path.join(scratch, "p.pb.gz"), "--stats-json", stats],
                                   check=True, stderr=subprocess.DEVNULL)
                    with open(stats) as f:
                        res[tag].setdefault(mode, []).append(json.load(f).get("sampler_cost_us"))
    finally:
        w.kill()
    with open(a.out, "w") as f:
        json.dump(res, f, indent=1)
    for mode in ("python", "mixed"):
        old = statistics.median(r["median"] for r in res["old"][mode])
        new = statistics.median(r["median"] for r in res["new"][mode])
        print("%s: old %.2f us, new %.2f us (%+.1f%%)" % (mode, old, new, 100 * (new / old - 1)))


if __name__ == "__main__":
    main()
