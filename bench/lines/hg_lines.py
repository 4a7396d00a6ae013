#!/usr/bin/python3.11
"""How many Python samples keep the line of every frame, on Mercurial.

    sudo bench/lines/hg_lines.py KRAIT_BINARY [--rounds 30] [--files 200]
                                 [--out DIR] [--hg /usr/bin/hg]

Builds a repository of --files files with Debian's Mercurial (runs on
/usr/bin/python3.11), then runs `hg commit`, `hg log` and `hg diff` for
--rounds rounds while `krait record --stacks python -f speedscope` samples
the machine (stopped by SIGTERM after the last round). Mercurial's commands
are short processes that spend much of their time importing modules, whose
module bodies are freed as soon as each import finishes: the case where
krait must name a frame from what the sampler captured at first sight.

Prints one JSON object: the Python samples of hg processes (those with a
Python frame), the share whose every frame has a line, and the frames
without one by function name (the most common first). Only the standard
library.
"""

import argparse
import collections
import json
import os
import signal
import subprocess
import sys
import tempfile
import time


def build_repo(hg, root, files):
    env = dict(os.environ, HGUSER="bench <bench@example.com>", HGPLAIN="1")
    subprocess.run([hg, "init", root], check=True, env=env)
    for i in range(files):
        sub = os.path.join(root, "d%02d" % (i % 20))
        os.makedirs(sub, exist_ok=True)
        with open(os.path.join(sub, "f%03d.txt" % i), "w") as f:
            f.write("".join("file %d line %d\n" % (i, j) for j in range(40)))
    subprocess.run([hg, "-R", root, "commit", "-A", "-m", "initial", "-q"], check=True, env=env)
    return env


def one_round(hg, root, env, n):
    # Touch a few files so that diff and commit have work.
    for k in range(5):
        i = (n * 7 + k * 13) % 200
        path = os.path.join(root, "d%02d" % (i % 20), "f%03d.txt" % i)
        if os.path.exists(path):
            with open(path, "a") as f:
                f.write("round %d\n" % n)
    for argv in (["diff"], ["commit", "-m", "round %d" % n], ["log", "-l", "20"]):
        subprocess.run([hg, "-R", root] + argv, check=True, env=env,
                       stdout=subprocess.DEVNULL)


def frame_has_line(frame):
    return frame.get("line", 0) > 0


def analyze(path):
    with open(path) as f:
        doc = json.load(f)
    frames = doc["shared"]["frames"]
    total = 0
    whole = 0
    missing = collections.Counter()
    frames_total = 0
    frames_missing = 0
    for prof in doc["profiles"]:
        name = prof.get("name", "")
        if not name.startswith("hg ("):
            continue
        for stack, weight in zip(prof["samples"], prof["weights"]):
            # Samples of a process not running Python code (start-up, exit)
            # have no Python frame to name.
            if all(frames[i].get("name", "").startswith("[no Python frame") for i in stack):
                continue
            # Stacks are aggregated: weights are samples times the period.
            w = weight
            total += w
            ok = True
            for idx in stack:
                fr = frames[idx]
                frames_total += w
                if not frame_has_line(fr):
                    ok = False
                    frames_missing += w
                    missing[fr.get("name", "?")] += w
            whole += w if ok else 0
    period = min((w for prof in doc["profiles"] for w in prof["weights"] if w > 0), default=1)
    for k in list(missing):
        missing[k] //= period
    return {
        "samples": total // period,
        "samples_every_line": whole // period,
        "share_every_line": (whole / total) if total else None,
        "frames": frames_total // period,
        "frames_without_line": frames_missing // period,
        "missing_by_name": dict(missing.most_common(12)),
    }


def main():
    p = argparse.ArgumentParser()
    p.add_argument("krait")
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--files", type=int, default=200)
    p.add_argument("--hg", default="/usr/bin/hg")
    p.add_argument("--out", default=None)
    p.add_argument("--krait-arg", action="append", default=[])
    a = p.parse_args()
    out = a.out or tempfile.mkdtemp(prefix="krait-hg-")
    os.makedirs(out, exist_ok=True)
    root = os.path.join(out, "repo")
    if os.path.exists(root):
        subprocess.run(["rm", "-rf", root], check=True)
    env = build_repo(a.hg, root, a.files)
    profile = os.path.join(out, "hg.speedscope.json")
    stats = os.path.join(out, "hg.stats.json")
    r, w = os.pipe()
    krait = subprocess.Popen(
        [a.krait, "record", "--stacks", "python", "-f", "speedscope",
         "-o", profile, "--stats-json", stats, "--ready-fd", str(w)] + a.krait_arg,
        pass_fds=(w,), stderr=open(os.path.join(out, "krait.stderr"), "w"))
    os.close(w)
    with os.fdopen(r) as ready:
        if "ready" not in ready.readline():
            sys.exit("krait did not start: see %s/krait.stderr" % out)
    start = time.monotonic()
    for n in range(a.rounds):
        one_round(a.hg, root, env, n)
    seconds = time.monotonic() - start
    krait.send_signal(signal.SIGTERM)
    if krait.wait() != 0:
        sys.exit("krait failed: see %s/krait.stderr" % out)
    result = analyze(profile)
    result["rounds"] = a.rounds
    result["seconds"] = round(seconds, 1)
    result["out"] = out
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
