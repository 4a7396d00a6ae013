#!/usr/bin/python3.11
"""How long `krait dump` takes on a process with many threads.

    sudo bench/dump/dump_bench.py KRAIT_BINARY [--threads 1000] [--runs 11]
                                  [--python EXE ...] [--results DIR]

For each --python interpreter (default: Debian's /usr/bin/python3.11 and
pyenv's 3.12.1), starts one process with --threads threads, each blocked in
threading.Event.wait() (a futex) in blocked() <- middle() <- entry(), below its thread's
entry, and waits for its "ready" line. Then runs, --runs times each and in
turns (so a change in the machine's load hits every mode alike):

    krait dump -p PID --json            Python frames
    krait dump -p PID --json --native   + kernel stacks, native unwinding, merge
    krait dump -p PID                   text output
    krait --version                     the binary's start and exit alone

and checks every run: exit 0, every thread of the process listed (the
workers blocked in futex with their Python frames, leaf `Condition.wait` or
`wait`). Reports the wall time of each run (median, min, max) and krait's
CPU time (user + system, from the children's rusage) as Markdown, and
writes every observation, the CPU model (/proc/cpuinfo) and the load
average to DIR/raw.json (default bench/results/<date>-dump/).

Root is needed to read other processes' memory; builds nothing; only the
standard library. docs/performance.md ("krait dump") has a run's numbers.
"""

import argparse
import datetime
import json
import os
import resource
import statistics
import subprocess
import sys
import time

WORKLOAD = r'''
import sys, threading
N = int(sys.argv[1])
stop = threading.Event()
started = threading.Semaphore(0)
def blocked(i):
    started.release()
    stop.wait()
def middle(i):
    blocked(i)
def entry(i):
    middle(i)
threads = [threading.Thread(target=entry, args=(i,), name="w%d" % i) for i in range(N)]
for t in threads:
    t.daemon = True
    t.start()
for _ in range(N):
    started.acquire()
print("ready", flush=True) if sys.version_info[0] >= 3 else None
sys.stdout.flush()
stop.wait()
'''


def cpu_model():
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "?"


def check(mode, out, pid, nthreads):
    """The run's output lists every thread with its Python frames."""
    if mode == "startup":
        if not out.startswith("krait "):
            raise SystemExit("krait --version printed %r" % out)
        return
    if mode == "text":
        workers = out.count('  Thread ')
        if workers != nthreads + 1:
            raise SystemExit("text dump lists %d threads, want %d" % (workers, nthreads + 1))
        return
    doc = json.loads(out)
    procs = [p for p in doc["processes"] if p["pid"] == pid]
    if len(procs) != 1:
        raise SystemExit("process %d not in the dump" % pid)
    threads = procs[0]["threads"]
    if len(threads) != nthreads + 1:
        raise SystemExit("dump lists %d threads, want %d" % (len(threads), nthreads + 1))
    for t in threads:
        if t["tid"] == pid:
            continue
        py = [f for f in t["frames"] if f["kind"] == "python"]
        if t["state"] != "blocked" or t["syscall"] != "futex" or len(py) < 4:
            raise SystemExit("thread %s: %s in %s with %d Python frames" %
                             (t["tid"], t["state"], t["syscall"], len(py)))
        if not py[0]["function"].endswith("wait") or py[2]["function"] != "blocked":
            raise SystemExit("thread %s: leaf frames %s" %
                             (t["tid"], [f["function"] for f in py[:4]]))
        if mode == "native" and not any(f["kind"] == "native" for f in t["frames"]):
            raise SystemExit("thread %s: no native frames: %s" % (t["tid"], t["native_error"]))


def run_once(krait, mode, pid):
    args = [krait, "dump", "-p", str(pid)]
    if mode == "startup":
        args = [krait, "--version"]
    elif mode != "text":
        args.append("--json")
    if mode == "native":
        args.append("--native")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    r = subprocess.run(args, capture_output=True, text=True)
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        raise SystemExit("%s: exit %d: %s" % (" ".join(args), r.returncode, r.stderr))
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, r.stdout


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("krait")
    parser.add_argument("--threads", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=11)
    parser.add_argument("--python", nargs="+",
                        default=["/usr/bin/python3.11",
                                 os.path.expanduser("~/.pyenv/versions/3.12.1/bin/python3.12")])
    parser.add_argument("--results", default=None)
    args = parser.parse_args()
    results = args.results or os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "results",
        datetime.date.today().isoformat() + "-dump")
    os.makedirs(results, exist_ok=True)

    raw = {"cpu_model": cpu_model(), "cpus": os.cpu_count(), "kernel": os.uname().release,
           "load_start": os.getloadavg(), "threads": args.threads, "runs": args.runs,
           "krait": os.path.abspath(args.krait), "interpreters": []}
    rows = []
    for exe in args.python:
        p = subprocess.Popen([exe, "-c", WORKLOAD, str(args.threads)], stdout=subprocess.PIPE,
                             text=True)
        try:
            if p.stdout.readline().strip() != "ready":
                raise SystemExit("%s: no ready line" % exe)
            version = subprocess.run([exe, "-c", "import sys; print(sys.version.split()[0])"],
                                     capture_output=True, text=True).stdout.strip()
            modes = ["startup", "python", "native", "text"]
            runs = {m: [] for m in modes}
            run_once(args.krait, "python", p.pid)  # warm the page cache
            for _ in range(args.runs):
                for mode in modes:
                    wall, cpu, out = run_once(args.krait, mode, p.pid)
                    check(mode, out, p.pid, args.threads)
                    runs[mode].append({"wall_s": wall, "cpu_s": cpu})
            raw["interpreters"].append({"python": exe, "version": version, "runs": runs})
            for mode in modes:
                walls = [r["wall_s"] for r in runs[mode]]
                cpus = [r["cpu_s"] for r in runs[mode]]
                rows.append((version, mode, statistics.median(walls), min(walls), max(walls),
                             statistics.median(cpus)))
        finally:
            p.kill()
            p.wait()
    raw["load_end"] = os.getloadavg()
    with open(os.path.join(results, "raw.json"), "w") as f:
        json.dump(raw, f, indent=1)
    lines = ["CPU: %s (%d CPUs), Linux %s; load %s -> %s" %
             (raw["cpu_model"], raw["cpus"], raw["kernel"],
              " ".join("%.2f" % x for x in raw["load_start"]),
              " ".join("%.2f" % x for x in raw["load_end"])),
             "",
             "%d threads, %d runs per mode, in turns" % (args.threads, args.runs),
             "",
             "| Python | mode | wall median | min | max | krait CPU median |",
             "|---|---|---:|---:|---:|---:|"]
    for version, mode, med, lo, hi, cpu in rows:
        lines.append("| %s | %s | %.0f ms | %.0f ms | %.0f ms | %.0f ms |" %
                     (version, mode, med * 1e3, lo * 1e3, hi * 1e3, cpu * 1e3))
    text = "\n".join(lines) + "\n"
    with open(os.path.join(results, "results.md"), "w") as f:
        f.write(text)
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
