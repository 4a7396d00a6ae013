"""bench/run's `peers` part: krait beside the profilers users pick instead.

One steady_work.py process per run (a fixed stack depth, a work counter in a
shared file), attached in turn by krait in both stack modes, by austin (on
the interpreters it supports) and by CPython 3.15's own
`python -m profiling.sampling` (on 3.15, the only version it attaches to),
and left alone once per round for the baseline rate. The conditions of one
(interpreter, depth) group run in a shuffled order in every round, so slow
drifts of the machine hit all of them alike.

Per run: the profiler's own CPU (user and sys from wait4, so start-up and
the final write are in it; for krait also the sampler's in-kernel time from
bpf_stats), the samples it collected, the target's CPU and work units over
the same window. From those: CPU per sample, samples per second of target
CPU, and the slowdown (baseline units per second over the run's), each as a
median with a bootstrap interval over the rounds, and the ratios of krait's
CPU per sample to each peer's.

Only the standard library, like bench/run.
"""

import json
import mmap
import os
import select
import statistics
import struct
import subprocess
import sys
import tempfile
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
STEADY_WORK = os.path.join(BENCH_DIR, "workloads", "steady_work.py")
SID_CACHE = os.environ.get("KRAIT_PYTHON_CACHE", "/var/cache/krait/pythons")
# Where scripts/provision-pythons --peers unpacks sid's austin.
AUSTIN = os.path.join(SID_CACHE, "peers", "austin", "krait-bin", "austin")
SID_315 = os.path.join(SID_CACHE, "sid-3.15")
PEER_PYTHONS = {
    "3.12": {"exe": "/root/.pyenv/versions/3.12.1/bin/python", "env": {}},
    "sid-3.15": {"exe": os.path.join(SID_315, "krait-bin", "python3.15"),
                 "env": {"PYTHONHOME": os.path.join(SID_315, "usr")}},
}
# austin 3.7 reads CPython up to 3.13; profiling.sampling attaches to its own
# version only.
PEERS_OF = {"3.12": ["austin"], "sid-3.15": ["profiling.sampling"]}
READY_TIMEOUT_S = 30
FLOOR_SECONDS = 5
FLOOR_ROUNDS = 3
STOP_MARGIN_S = 60


class PeerError(Exception):
    pass


class Target:
    """A workload that counts its work units in a shared file (steady_work.py
    by default), running once it has said so on stdout."""

    def __init__(self, python, frames, workdir, script=STEADY_WORK, extra=None):
        self.counter_path = os.path.join(workdir, "counter")
        env = dict(os.environ, **python["env"])
        argv = [python["exe"], script, "--counter", self.counter_path]
        argv += extra if extra is not None else ["--frames", str(frames)]
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     env=env)
        ready = select.select([self.proc.stdout], [], [], READY_TIMEOUT_S)[0]
        line = self.proc.stdout.readline() if ready else b""
        if not line:
            self.stop()
            raise PeerError("%s (%s) did not start" % (os.path.basename(script), python["exe"]))
        self.report = json.loads(line)
        self.pid = self.proc.pid
        fd = os.open(self.counter_path, os.O_RDONLY)
        try:
            self.counter = mmap.mmap(fd, 8, prot=mmap.PROT_READ)
        finally:
            os.close(fd)

    def snapshot(self):
        """(monotonic time, units done, target CPU seconds)."""
        with open("/proc/%d/stat" % self.pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return time.monotonic(), struct.unpack_from("<Q", self.counter, 0)[0], cpu

    def stop(self):
        if self.proc.poll() is None:
            # SIGTERM: a forking workload's other side sees the pipe close.
            self.proc.terminate()
            self.proc.wait()
        if getattr(self, "counter", None) is not None:
            self.counter.close()


def run_child(argv, env, timeout, log_path):
    """Runs a peer profiler to its end; returns (exit code, rusage dict)."""
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while True:
            pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
            if pid == proc.pid:
                proc.returncode = os.waitstatus_to_exitcode(status)
                return proc.returncode, {"user_s": ru.ru_utime, "sys_s": ru.ru_stime,
                                         "cpu_s": ru.ru_utime + ru.ru_stime,
                                         "max_rss_kb": ru.ru_maxrss}
            if time.monotonic() >= deadline:
                proc.kill()
                proc.wait()
                raise PeerError("%s did not end within %.0f s (log: %s)" %
                                (argv[0], timeout, log_path))
            time.sleep(0.05)


def austin_samples(path):
    """austin writes one line per sample; comment lines carry metadata."""
    n = 0
    with open(path, "rb") as f:
        for line in f:
            if line.strip() and not line.startswith(b"#"):
                n += 1
    return n


def collapsed_samples(path):
    """Folded stacks: each line ends with its sample count."""
    n = 0
    with open(path, "rb") as f:
        for line in f:
            parts = line.rsplit(None, 1)
            if len(parts) == 2 and parts[1].isdigit():
                n += int(parts[1])
    return n


class Peers:
    """The part itself; `bench` is bench/run's Bench (results, rng, files)."""

    def __init__(self, bench, krait_class, bootstrap_ci):
        self.bench = bench
        self.args = bench.args
        self.krait_class = krait_class
        self.bootstrap_ci = bootstrap_ci

    def available(self, peer, python):
        if peer == "austin":
            return os.access(AUSTIN, os.X_OK)
        return os.access(PEER_PYTHONS["sid-3.15"]["exe"], os.X_OK) and python == "sid-3.15"

    def run_krait(self, target, mode, tag):
        a = self.args
        b = self.bench
        stats = b.run_file(tag, "stats.json")
        flags = ["-p", str(target.pid), "-r", str(a.peers_rate), "-d", str(a.peers_seconds),
                 "--stacks", mode, "-o", b.run_file(tag, "pb.gz")]
        before = target.snapshot()
        k = self.krait_class(b.krait, flags, stats, b.run_file(tag, "log"))
        ready_cpu = _proc_cpu(k.proc.pid)
        st = k.wait(a.peers_seconds + STOP_MARGIN_S)
        after = target.snapshot()
        ru = k.rusage
        proc = next((p for p in st["processes"] if p["pid"] == target.pid), None)
        if proc is None or not proc["profiled"]:
            raise PeerError("krait did not profile pid %d (stats: %s)" % (target.pid, stats))
        return {"samples": st["python_samples"], "user_s": ru["user_s"], "sys_s": ru["sys_s"],
                "kernel_s": st["bpf_run_time_ns"] / 1e9, "max_rss_kb": ru["max_rss_kb"],
                "startup_cpu_s": ready_cpu, "startup_wall_s": k.ready - k.started,
                "ok_samples": proc["by_status"].get("ok", 0), "stats": os.path.basename(stats),
                "window": _window(before, after)}

    def run_peer(self, target, peer, tag):
        a = self.args
        b = self.bench
        out = b.run_file(tag, "txt")
        if peer == "austin":
            # -i is the interval in microseconds; -x the run's length in s.
            argv = [AUSTIN, "-i", str(round(1e6 / a.peers_rate)), "-x", str(a.peers_seconds),
                    "-o", out, "-p", str(target.pid)]
            env = dict(os.environ)
            count = austin_samples
        else:
            py = PEER_PYTHONS["sid-3.15"]
            argv = [py["exe"], "-m", "profiling.sampling", "attach", "-r", str(a.peers_rate),
                    "-d", str(a.peers_seconds), "--collapsed", "-o", out, str(target.pid)]
            env = dict(os.environ, **py["env"])
            count = collapsed_samples
        before = target.snapshot()
        rc, ru = run_child(argv, env, a.peers_seconds + STOP_MARGIN_S, b.run_file(tag, "log"))
        after = target.snapshot()
        if rc != 0 or not os.path.exists(out):
            raise PeerError("%s exited with %d (log: %s)" % (peer, rc, b.run_file(tag, "log")))
        return {"samples": count(out), "user_s": ru["user_s"], "sys_s": ru["sys_s"],
                "kernel_s": 0.0, "max_rss_kb": ru["max_rss_kb"], "output": os.path.basename(out),
                "window": _window(before, after)}

    def run_none(self, target):
        before = target.snapshot()
        time.sleep(self.args.peers_seconds)
        return {"samples": 0, "window": _window(before, target.snapshot())}

    def run(self):
        a = self.args
        b = self.bench
        groups = []
        for python in a.peers_pythons:
            conditions = ["none", "krait-mixed", "krait-python"]
            for peer in PEERS_OF[python]:
                if self.available(peer, python):
                    conditions.append(peer)
                else:
                    _log("peers: %s not available for %s (scripts/provision-pythons --peers)" %
                         (peer, python))
            for frames in a.peers_frames:
                groups.append((python, frames, conditions))
        rounds = []
        with tempfile.TemporaryDirectory(prefix="krait-peers-") as workdir:
            for r in range(a.peers_rounds):
                runs = []
                for python, frames, conditions in groups:
                    order = conditions[:]
                    b.rng.shuffle(order)
                    for cond in order:
                        tag = "peers-%s-%d-%s" % (python, frames, cond)
                        target = Target(PEER_PYTHONS[python], frames, workdir)
                        try:
                            if cond == "none":
                                run = self.run_none(target)
                            elif cond.startswith("krait-"):
                                run = self.run_krait(target, cond[len("krait-"):], tag)
                            else:
                                run = self.run_peer(target, cond, tag)
                        finally:
                            target.stop()
                        run.update({"python": python, "frames": frames, "condition": cond,
                                    "round": r})
                        runs.append(run)
                rounds.append(runs)
                _log("peers round %d/%d done" % (r + 1, a.peers_rounds))
                b.results["peers"] = {"rounds": rounds, "partial": True}
                b.save()
            floor = self.floor(workdir)
        b.results["peers"] = {"rate": a.peers_rate, "seconds": a.peers_seconds,
                              "pythons": a.peers_pythons, "frames": a.peers_frames,
                              "rounds": rounds, "summary": self.summary(rounds, groups),
                              "floor": floor}

    def floor(self, workdir):
        """The sampler's self-timed cost at the deepest depth, beside what an
        empty perf_event program and one user-memory read cost on this host,
        measured while steady_work.py keeps every CPU busy."""
        a = self.args
        b = self.bench
        probe = os.path.normpath(a.probe or os.path.join(os.path.dirname(b.krait), "..", "..",
                                                         "bench", "krait_ringbuf_probe"))
        frames = max(a.peers_frames)
        out = {"frames": frames, "sampler": [], "probe": []}
        for python in a.peers_pythons:
            for mode in ("mixed", "python"):
                target = Target(PEER_PYTHONS[python], frames, workdir)
                try:
                    tag = "floor-%s-%s" % (python, mode)
                    stats = b.run_file(tag, "stats.json")
                    k = self.krait_class(b.krait, ["-p", str(target.pid), "-r", str(a.peers_rate),
                                                   "-d", str(FLOOR_SECONDS), "--stacks", mode,
                                                   "--measure-sampler-cost", "-o",
                                                   b.run_file(tag, "pb.gz")],
                                         stats, b.run_file(tag, "log"))
                    st = k.wait(FLOOR_SECONDS + STOP_MARGIN_S)
                finally:
                    target.stop()
                cost = st.get("sampler_cost_us") or {}
                out["sampler"].append({"python": python, "mode": mode,
                                       "median_us": cost.get("median"), "p90_us": cost.get("p90"),
                                       "samples": cost.get("samples"),
                                       "stats": os.path.basename(stats)})
        if not os.access(probe, os.X_OK):
            _log("peers: no floor: %s not found (ninja krait_ringbuf_probe)" % probe)
            return out
        busy = []
        try:
            for i in range(os.cpu_count() or 1):
                d = os.path.join(workdir, "busy%d" % i)
                os.makedirs(d, exist_ok=True)
                busy.append(Target(PEER_PYTHONS["3.12"], frames, d))
            for r in range(FLOOR_ROUNDS):
                for mode in ("nothing", "user-read"):
                    res = subprocess.run([probe, "--mode", mode, "--hz", str(a.peers_rate),
                                          "--seconds", str(FLOOR_SECONDS)],
                                         capture_output=True, text=True,
                                         timeout=FLOOR_SECONDS + STOP_MARGIN_S)
                    if res.returncode != 0:
                        raise PeerError("krait_ringbuf_probe --mode %s: %s" %
                                        (mode, res.stderr.strip()))
                    run = json.loads(res.stdout)
                    run["mean_ns"] = run["run_time_ns"] / max(run["runs"], 1)
                    run["round"] = r
                    out["probe"].append(run)
        finally:
            for t in busy:
                t.stop()
        for mode in ("nothing", "user-read"):
            out[mode.replace("-", "_") + "_ns_median"] = statistics.median(
                run["mean_ns"] for run in out["probe"] if run["mode"] == mode)
        return out

    def summary(self, rounds, groups):
        out = []
        for python, frames, conditions in groups:
            base = {}
            for runs in rounds:
                for run in runs:
                    if (run["python"], run["frames"], run["condition"]) == (python, frames,
                                                                            "none"):
                        base[run["round"]] = run["window"]["units_per_s"]
            per = {}
            for cond in conditions:
                rs = [run for runs in rounds for run in runs
                      if (run["python"], run["frames"], run["condition"]) == (python, frames,
                                                                              cond)]
                s = {"runs": len(rs)}
                slow = [base[run["round"]] / run["window"]["units_per_s"] for run in rs
                        if run["window"]["units_per_s"] > 0 and run["round"] in base]
                if cond != "none" and slow:
                    s["slowdown_median"] = statistics.median(slow)
                    s["slowdown_ci95"] = self.bootstrap_ci(slow, statistics.median, self.bench.rng)
                if cond != "none":
                    cps = [_cpu_us_per_sample(run) for run in rs if run["samples"]]
                    if cps:
                        s["cpu_us_per_sample_median"] = statistics.median(cps)
                        s["cpu_us_per_sample_ci95"] = self.bootstrap_ci(cps, statistics.median,
                                                                        self.bench.rng)
                        for part in ("kernel_s", "user_s", "sys_s"):
                            s[part[:-2] + "_us_per_sample_median"] = statistics.median(
                                run[part] * 1e6 / run["samples"] for run in rs if run["samples"])
                    s["samples_per_target_cpu_s_median"] = statistics.median(
                        run["samples"] / run["window"]["target_cpu_s"] for run in rs
                        if run["window"]["target_cpu_s"] > 0)
                    s["max_rss_kb_max"] = max(run["max_rss_kb"] for run in rs)
                    if cond.startswith("krait-"):
                        s["startup_cpu_s_median"] = statistics.median(run["startup_cpu_s"]
                                                                      for run in rs)
                        s["startup_wall_s_median"] = statistics.median(run["startup_wall_s"]
                                                                       for run in rs)
                        s["ok_share_min"] = min(run["ok_samples"] / max(run["samples"], 1)
                                                for run in rs)
                per[cond] = s
            ratios = {}
            peers = [c for c in conditions if not c.startswith("krait-") and c != "none"]
            for peer in peers:
                for mode in ("krait-mixed", "krait-python"):
                    k = per[mode].get("cpu_us_per_sample_median")
                    p = per[peer].get("cpu_us_per_sample_median")
                    if k and p:
                        ratios["%s/%s" % (mode, peer)] = k / p
            out.append({"python": python, "frames": frames, "conditions": per,
                        "ratios": ratios})
        return out


def _proc_cpu(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return None


def _window(before, after):
    dt = after[0] - before[0]
    units = after[1] - before[1]
    return {"wall_s": dt, "units": units, "units_per_s": units / dt if dt > 0 else 0.0,
            "target_cpu_s": after[2] - before[2]}


def _cpu_us_per_sample(run):
    return (run["user_s"] + run["sys_s"] + run["kernel_s"]) * 1e6 / run["samples"]


def _log(msg):
    print("[bench] " + msg, file=sys.stderr, flush=True)


def markdown(peers, fmt):
    """The peers section of bench/run's report (fmt: number format)."""
    return "\n".join([
        "### Peers: CPU per sample, side by side", "",
        "steady_work.py at a fixed depth, %d Hz, %s s per run, %d rounds, conditions shuffled "
        "per round. CPU = the profiler's user + sys (wait4, start-up included) + for krait the "
        "sampler's bpf_stats time." % (peers["rate"], fmt(peers["seconds"], 0),
                                       len(peers["rounds"])), "",
        tables(peers, fmt)])


def tables(peers, fmt):
    """The peers tables alone (docs/performance.md embeds them)."""
    lines = ["| python | frames | profiler | CPU µs/sample [95% CI] | kernel / user / sys µs | "
             "samples per target CPU s | slowdown [95% CI] | peak RSS MiB | start-up CPU s |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    for g in peers["summary"]:
        for cond, s in g["conditions"].items():
            if cond == "none":
                continue
            ci = s.get("cpu_us_per_sample_ci95", [float("nan")] * 2)
            sl = s.get("slowdown_ci95", [float("nan")] * 2)
            lines.append("| %s | %d | %s | %s [%s, %s] | %s / %s / %s | %s | %s [%s, %s] | %s | %s |" % (
                g["python"], g["frames"], cond, fmt(s.get("cpu_us_per_sample_median"), 1),
                fmt(ci[0], 1), fmt(ci[1], 1), fmt(s.get("kernel_us_per_sample_median"), 1),
                fmt(s.get("user_us_per_sample_median"), 1), fmt(s.get("sys_us_per_sample_median"), 1),
                fmt(s.get("samples_per_target_cpu_s_median"), 0),
                fmt(s.get("slowdown_median"), 3), fmt(sl[0], 3), fmt(sl[1], 3),
                fmt(s.get("max_rss_kb_max", 0) / 1024, 1),
                fmt(s.get("startup_cpu_s_median"), 3) if "startup_cpu_s_median" in s else "-"))
    lines += ["", "| python | frames | ratio | krait CPU per sample / peer's |", "|---|---:|---|---:|"]
    for g in peers["summary"]:
        for name, r in g["ratios"].items():
            lines.append("| %s | %d | %s | %s |" % (g["python"], g["frames"], name, fmt(r, 3)))
    floor = peers.get("floor")
    if floor:
        empty = floor.get("nothing_ns_median")
        read = floor.get("user_read_ns_median")
        lines += ["", "The sampler at %d frames, self-timed (--measure-sampler-cost), beside this "
                  "host's floor: an empty perf_event program %s ns per run, one with one user-memory "
                  "read %s ns (bpf_stats, every CPU busy)." % (floor["frames"], fmt(empty, 0),
                                                               fmt(read, 0)),
                  "", "| python | stacks | sampler median µs | p90 µs | median / empty program |",
                  "|---|---|---:|---:|---:|"]
        for sm in floor["sampler"]:
            ratio = (sm["median_us"] * 1000 / empty) if empty and sm["median_us"] else None
            lines.append("| %s | %s | %s | %s | %s |" % (sm["python"], sm["mode"],
                                                        fmt(sm["median_us"], 2),
                                                        fmt(sm["p90_us"], 2), fmt(ratio, 1)))
    return "\n".join(lines) + "\n"
