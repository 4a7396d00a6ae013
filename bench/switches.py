"""bench/run's `switches` part: what off-CPU profiling costs on the workload
it costs most on.

ping_pong.py (two Python processes passing a byte over pipes, two context
switches per round trip) runs under system-wide krait in each --mode, and
with --switch-every, the knob that bounds the cost, and once per round with
no profiler for the baseline rate; conditions shuffled per round. Per run:
round trips per second (the slowdown against the round's baseline), the
switches krait captured, and krait's CPU (user + sys from wait4, plus both
BPF programs' bpf_stats time) per second and per captured switch.

Only the standard library, like bench/run.
"""

import os
import statistics
import tempfile
import time

import peers

PING_PONG = os.path.join(peers.BENCH_DIR, "workloads", "ping_pong.py")
# (name, krait record flags); None: no profiler.
CONDITIONS = [
    ("none", None),
    ("cpu", ["--mode", "cpu"]),
    ("off-cpu", ["--mode", "off-cpu"]),
    ("wall", ["--mode", "wall"]),
    ("wall-every-10", ["--mode", "wall", "--switch-every", "10"]),
]


class Switches:
    def __init__(self, bench, krait_class, bootstrap_ci):
        self.bench = bench
        self.args = bench.args
        self.krait_class = krait_class
        self.bootstrap_ci = bootstrap_ci

    def run_one(self, name, flags, workdir):
        a = self.args
        b = self.bench
        python = peers.PEER_PYTHONS["3.12"]
        target = peers.Target(python, 0, workdir, script=PING_PONG, extra=[])
        try:
            if flags is None:
                return {"window": self.idle_window(target)}
            tag = "switches-" + name
            stats = b.run_file(tag, "stats.json")
            before = target.snapshot()
            k = self.krait_class(b.krait, ["-r", str(a.rate), "-d", str(a.switches_seconds),
                                           "-o", b.run_file(tag, "pb.gz")] + flags,
                                 stats, b.run_file(tag, "log"))
            st = k.wait(a.switches_seconds + peers.STOP_MARGIN_S)
            after = target.snapshot()
        finally:
            target.stop()
        ru = k.rusage
        return {"window": peers._window(before, after), "user_s": ru["user_s"],
                "sys_s": ru["sys_s"], "kernel_s": st["bpf_run_time_ns"] / 1e9,
                "wall_s": ru["wall_s"], "max_rss_kb": ru["max_rss_kb"],
                "switch_samples": st.get("switch_samples", 0),
                "switches_skipped": st.get("switches_skipped", 0),
                "python_samples": st["python_samples"], "losses": st["losses"],
                "stats": os.path.basename(stats)}

    def idle_window(self, target):
        before = target.snapshot()
        time.sleep(self.args.switches_seconds)
        return peers._window(before, target.snapshot())

    def run(self):
        a = self.args
        b = self.bench
        rounds = []
        with tempfile.TemporaryDirectory(prefix="krait-switches-") as workdir:
            for r in range(a.switches_rounds):
                order = CONDITIONS[:]
                b.rng.shuffle(order)
                runs = {}
                for name, flags in order:
                    runs[name] = self.run_one(name, flags, workdir)
                rounds.append(runs)
                peers._log("switches round %d/%d: %s" % (r + 1, a.switches_rounds, "  ".join(
                    "%s %.0f/s" % (n, runs[n]["window"]["units_per_s"]) for n, _ in CONDITIONS)))
        b.results["switches"] = {"seconds": a.switches_seconds, "rate": a.rate,
                                 "rounds": rounds, "summary": self.summary(rounds)}

    def summary(self, rounds):
        out = {}
        for name, flags in CONDITIONS:
            rs = [rd[name] for rd in rounds]
            s = {"round_trips_per_s_median": statistics.median(r["window"]["units_per_s"]
                                                               for r in rs)}
            if flags is not None:
                slow = [rd["none"]["window"]["units_per_s"] / rd[name]["window"]["units_per_s"]
                        for rd in rounds if rd[name]["window"]["units_per_s"] > 0]
                s["slowdown_median"] = statistics.median(slow)
                s["slowdown_ci95"] = self.bootstrap_ci(slow, statistics.median, self.bench.rng)
                cpu = [(r["user_s"] + r["sys_s"] + r["kernel_s"]) / r["wall_s"] for r in rs]
                s["krait_cpu_share_median"] = statistics.median(cpu)
                s["kernel_share_median"] = statistics.median(r["kernel_s"] / r["wall_s"]
                                                             for r in rs)
                s["switch_samples_per_s_median"] = statistics.median(
                    r["switch_samples"] / r["wall_s"] for r in rs)
                per = [(r["user_s"] + r["sys_s"] + r["kernel_s"]) * 1e6 / r["switch_samples"]
                       for r in rs if r["switch_samples"]]
                if per:
                    s["cpu_us_per_switch_sample_median"] = statistics.median(per)
                s["max_rss_kb_max"] = max(r["max_rss_kb"] for r in rs)
            out[name] = s
        return out


def markdown(sw, fmt):
    lines = ["### Off-CPU cost: ping_pong.py (two switches per round trip)", "",
             "System-wide krait, %s s per run, %d rounds, conditions shuffled per round; CPU = "
             "krait's user + sys + both BPF programs' bpf_stats time." % (
                 fmt(sw["seconds"], 0), len(sw["rounds"])), "",
             tables(sw, fmt)]
    return "\n".join(lines)


def tables(sw, fmt):
    lines = ["| krait | round trips/s | slowdown [95% CI] | captured switches/s | "
             "krait CPU (share of a core) | of it BPF | CPU µs per captured switch | peak RSS MiB |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, flags in CONDITIONS:
        s = sw["summary"][name]
        if flags is None:
            lines.append("| none | %s | | | | | | |" % fmt(s["round_trips_per_s_median"], 0))
            continue
        ci = s["slowdown_ci95"]
        lines.append("| `%s` | %s | %s [%s, %s] | %s | %s%% | %s%% | %s | %s |" % (
            " ".join(flags), fmt(s["round_trips_per_s_median"], 0), fmt(s["slowdown_median"], 3),
            fmt(ci[0], 3), fmt(ci[1], 3), fmt(s["switch_samples_per_s_median"], 0),
            fmt(s["krait_cpu_share_median"] * 100, 1), fmt(s["kernel_share_median"] * 100, 1),
            fmt(s.get("cpu_us_per_switch_sample_median"), 1), fmt(s["max_rss_kb_max"] / 1024, 1)))
    return "\n".join(lines) + "\n"
