#!/usr/bin/python3.11
"""What `krait daemon` costs over a long run: its CPU and its memory.

    sudo bench/daemon_cost.py KRAIT_BINARY [--seconds 600] [--busy 4]
                              [--rate 99] [--results DIR]

Starts --busy CPU-bound Python processes (tests/workloads/chain.py, taking
turns between Debian's /usr/bin/python3.11 and pyenv's 3.12), then
`krait daemon` with its defaults (mixed stacks, kernel frames, 15 s
intervals) at --rate Hz, selecting exactly those processes and writing its
profiles to a directory (no network: the upload path costs a request per
profile and is not what this measures). For --seconds it reads, every 5 s,
the daemon's CPU time (utime + stime of /proc/PID/stat, all threads) and
RSS (VmRSS), and the busy processes' CPU time; then stops the daemon with
SIGTERM and checks it exited 0.

Reports (printed as Markdown, and saved with every observation under the
results directory, default bench/results/<date>-daemon-cost/):
  - the daemon's CPU as a share of one CPU over the whole run, and per
    minute (min / median / max), and the samples it took (its health line);
  - its RSS: after the first interval, the median and the maximum over the
    run, at the end, and VmHWM (the kernel's peak);
  - the machine's load average before and after, and the busy processes'
    CPU: a machine shared with other work shows up there.

Builds nothing; needs root (the daemon loads BPF). Only the standard
library. docs/daemon.md ("Cost") has the numbers of a run and the method.
"""

import argparse
import datetime
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_DIR = os.path.dirname(BENCH_DIR)
CHAIN = os.path.join(REPO_DIR, "tests", "workloads", "chain.py")
INTERPRETERS = ["/usr/bin/python3.11", "/root/.pyenv/versions/3.12.1/bin/python"]
CLK_TCK = os.sysconf("SC_CLK_TCK")
POLL_S = 5


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # After the comm: utime and stime are fields 14 and 15 of the line.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def status_kib(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/{pid}/status has no {key}")


def loadavg():
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("krait", help="the krait binary, e.g. build/src/cli/krait")
    parser.add_argument("--seconds", type=int, default=600)
    parser.add_argument("--busy", type=int, default=4)
    parser.add_argument("--rate", type=int, default=99)
    parser.add_argument("--results", default=None)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("daemon_cost: run as root (krait loads BPF)")
    for path in [args.krait] + INTERPRETERS:
        if not os.access(path, os.X_OK):
            sys.exit(f"daemon_cost: {path} is missing (scripts/provision-pythons, the build)")
    stamp = datetime.date.today().isoformat()
    results = args.results or os.path.join(BENCH_DIR, "results", f"{stamp}-daemon-cost")
    os.makedirs(results, exist_ok=True)

    work = tempfile.mkdtemp(prefix="krait-daemon-cost-")
    # A copy of the workload in a directory of this run's own: the daemon
    # selects these processes by it and nothing else on the host.
    script = os.path.join(work, "chain.py")
    with open(CHAIN) as src, open(script, "w") as dst:
        dst.write(src.read())
    profiles = os.path.join(work, "profiles")
    os.mkdir(profiles)

    busy = []
    for i in range(args.busy):
        p = subprocess.Popen([INTERPRETERS[i % len(INTERPRETERS)], script],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        p.stdout.readline()  # its truth: it is running its hot loop
        busy.append(p)
    load_before = loadavg()
    log_path = os.path.join(results, "daemon.log")
    log = open(log_path, "w")
    daemon = subprocess.Popen(
        [args.krait, "daemon", "--ready-fd", "1", "--rate", str(args.rate),
         "--output-dir", profiles, "--cmdline-regex", re.escape(work + "/")],
        stdout=subprocess.PIPE, stderr=log)
    if daemon.stdout.readline().strip() != b"ready":
        sys.exit(f"daemon_cost: the daemon did not start; see {log_path}")
    started = time.monotonic()
    busy_cpu0 = [cpu_seconds(p.pid) for p in busy]
    rows = []  # t, daemon cpu s, rss KiB
    try:
        while True:
            t = time.monotonic() - started
            rows.append({"t": round(t, 3), "cpu_s": cpu_seconds(daemon.pid),
                         "rss_kib": status_kib(daemon.pid, "VmRSS")})
            if t >= args.seconds:
                break
            time.sleep(min(POLL_S, args.seconds - t))
        hwm_kib = status_kib(daemon.pid, "VmHWM")
        busy_cpu = sum(cpu_seconds(p.pid) for p in busy) - sum(busy_cpu0)
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(timeout=30)
    finally:
        for p in busy:
            p.kill()
            p.wait()
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
    load_after = loadavg()
    log.close()
    if code != 0:
        sys.exit(f"daemon_cost: the daemon exited {code}; see {log_path}")

    wall = rows[-1]["t"] - rows[0]["t"]
    cpu = rows[-1]["cpu_s"] - rows[0]["cpu_s"]
    step = 60 // POLL_S  # rows a minute apart (each poll sleeps POLL_S)
    per_minute = [100 * (rows[i + step]["cpu_s"] - rows[i]["cpu_s"]) /
                  (rows[i + step]["t"] - rows[i]["t"]) for i in range(0, len(rows) - step, step)]
    warm = [r["rss_kib"] for r in rows if r["t"] >= 20]  # after the first 15 s interval
    with open(log_path) as f:
        health = re.findall(r"health: .*?, (\d+) samples \(\+(\d+)\), (\d+) lost", f.read())
    samples = int(health[-1][0]) if health else None
    lost = int(health[-1][2]) if health else None
    files = len([n for n in os.listdir(profiles) if n.endswith(".pb.gz")])
    summary = {
        "date": stamp, "seconds": round(wall, 1), "rate_hz": args.rate, "busy": args.busy,
        "cpus": os.cpu_count(), "kernel": os.uname().release,
        "daemon_cpu_s": round(cpu, 2), "daemon_cpu_pct": round(100 * cpu / wall, 2),
        "cpu_pct_per_minute": [round(x, 2) for x in per_minute],
        "rss_kib_warm": warm[0] if warm else None,
        "rss_kib_median": int(statistics.median(warm)) if warm else None,
        "rss_kib_max": max(warm) if warm else None,
        "rss_kib_end": rows[-1]["rss_kib"], "vmhwm_kib": hwm_kib,
        "busy_cpu_s": round(busy_cpu, 1),
        "samples_at_last_health": samples, "lost_at_last_health": lost,
        "profile_files": files, "load_before": load_before, "load_after": load_after,
    }
    with open(os.path.join(results, "results.json"), "w") as f:
        json.dump({"summary": summary, "observations": rows}, f, indent=1)
    mib = lambda kib: f"{kib / 1024:.1f} MiB" if kib is not None else "-"
    pm = summary["cpu_pct_per_minute"]
    table = f"""| what | value |
|---|---|
| run | {summary['seconds']:.0f} s, {args.busy} busy Python processes, {args.rate} Hz, {summary['cpus']} CPUs, Linux {summary['kernel']} |
| daemon CPU | {cpu:.1f} s = {summary['daemon_cpu_pct']:.2f} % of one CPU |
| daemon CPU per minute | min {min(pm):.2f} %, median {statistics.median(pm):.2f} %, max {max(pm):.2f} % |
| daemon RSS | after the first interval {mib(summary['rss_kib_warm'])}, median {mib(summary['rss_kib_median'])}, max {mib(summary['rss_kib_max'])}, at the end {mib(summary['rss_kib_end'])}; VmHWM {mib(hwm_kib)} |
| samples | {samples} by the last health line ({lost} lost), {files} profile files |
| busy processes | {busy_cpu:.0f} s of CPU in {wall:.0f} s |
| load average | before {load_before[0]:.2f}, after {load_after[0]:.2f} |
""" if pm else "(run shorter than two minutes: no per-minute figures)\n"
    with open(os.path.join(results, "results.md"), "w") as f:
        f.write(table)
    print(table)


if __name__ == "__main__":
    main()
