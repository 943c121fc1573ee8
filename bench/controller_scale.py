"""`godrun controller` at scale against the real API server: N GodRuns created at once (no node stand-in).

Starts etcd + kube-apiserver (godrun/testcluster.py), applies the CRD, runs the controller as its own process
(timing every `Controller.process` call itself, exactly), creates the runs from a few client threads and
watches until each has its first training Job and status.phase Training. Reports reconcile latency
(the controller's own timing and the /metrics histogram), time until all runs have their first Job,
and the controller's peak RSS (VmHWM). Goals: p99 <= 100 ms, RSS <= 150 MB.

    .venv/bin/python bench/controller_scale.py [--runs 200] [--workers 2] [--clients 8]
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import json
import os
import pstats
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from godrun.contract.words import LABEL_RUN, MANAGED_SELECTOR, ConditionStatus, Phase

ROOT = Path(__file__).resolve().parents[1]
CRD = ROOT / "manifests" / "crd" / "godruns.godrun.io.yaml"
G, V, P = "godrun.io", "v1alpha1", "godruns"
NS = "bench"
GOAL_P99_S, GOAL_RSS_MB = 0.100, 150.0


# --------------------------------------------------------------------------- the controller process


def child(argv: list[str]) -> int:
    """`godrun controller` with each reconcile's wall time recorded; dumped as JSON on SIGTERM."""
    out = Path(argv.pop(0))  # also in $GODRUN_BENCH_DUMP
    from godrun.controller import loop
    from godrun.controller import main as controller_main

    samples: list[tuple[float, float]] = []  # (start, seconds)
    profiles: list[cProfile.Profile] = []
    profile_to = os.environ.get("GODRUN_BENCH_PROFILE")
    original = loop.Controller.process

    def timed(self: loop.Controller, key: loop.Key) -> None:
        prof = cProfile.Profile() if profile_to else None  # per call: cProfile sees only its own thread
        t0 = time.perf_counter()
        try:
            if prof:
                prof.runcall(original, self, key)
            else:
                original(self, key)
        finally:
            samples.append((t0, time.perf_counter() - t0))
            if prof:
                profiles.append(prof)

    loop.Controller.process = timed  # type: ignore[method-assign]

    def dump(*_: object) -> None:
        if profiles and profile_to:
            stats = pstats.Stats(profiles[0])
            for prof in profiles[1:]:
                stats.add(prof)
            stats.dump_stats(profile_to)
        out.write_text(json.dumps({"samples": samples, "status": _proc_status(os.getpid())}))
        os._exit(0)

    signal.signal(signal.SIGTERM, dump)
    return controller_main.main(argv)


def _proc_status(pid: int) -> dict[str, str]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS", "Threads"):
            fields[key] = value.strip()
    return fields


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process so far (/proc/<pid>/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _kb(value: str) -> float:
    return float(value.split()[0])


# --------------------------------------------------------------------------- helpers


def apply_crd(api_client: Any) -> None:
    import yaml
    from kubernetes import client

    ext = client.ApiextensionsV1Api(api_client)
    ext.create_custom_resource_definition(yaml.safe_load(CRD.read_text()))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status = ext.read_custom_resource_definition(f"{P}.{G}").status
        conds = (status.conditions if status else None) or []
        if any(c.type == "Established" and c.status == ConditionStatus.TRUE for c in conds):
            time.sleep(1.0)
            return
        time.sleep(0.2)
    raise TimeoutError("CRD not Established")


def body(name: str) -> dict[str, Any]:
    spec = {"image": "godrun:bench", "resources": {"gpus": 0, "cpu": "1", "memory": "1Gi"}}
    return {"apiVersion": f"{G}/{V}", "kind": "GodRun", "metadata": {"name": name}, "spec": spec}


class Watcher:
    """Records when each run's first training Job appears and when its status first says Training."""

    def __init__(self, api_client: Any, runs: set[str]) -> None:
        self.api_client, self.runs = api_client, runs
        self.first_job: dict[str, float] = {}
        self.training: dict[str, float] = {}
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(target=self._jobs, daemon=True),
            threading.Thread(target=self._godruns, daemon=True),
        ]
        for t in self.threads:
            t.start()

    def done(self) -> bool:
        return len(self.first_job) == len(self.runs) and len(self.training) == len(self.runs)

    def _jobs(self) -> None:
        from kubernetes import client, watch

        batch = client.BatchV1Api(self.api_client)
        while not self.stop.is_set():
            with contextlib.suppress(Exception):  # the stream ends with the cluster
                for ev in watch.Watch().stream(batch.list_namespaced_job, NS, timeout_seconds=5):
                    run = ev["object"].metadata.labels.get(LABEL_RUN, "")
                    if run in self.runs and run not in self.first_job:
                        self.first_job[run] = time.monotonic()

    def _godruns(self) -> None:
        from kubernetes import client, watch

        custom = client.CustomObjectsApi(self.api_client)
        while not self.stop.is_set():
            with contextlib.suppress(Exception):
                for ev in watch.Watch().stream(custom.list_namespaced_custom_object, G, V, NS, P, timeout_seconds=5):
                    obj = ev["object"]
                    name = obj["metadata"]["name"]
                    if (obj.get("status") or {}).get("phase") == Phase.TRAINING and name not in self.training:
                        self.training[name] = time.monotonic()


def histogram(text: str, name: str) -> tuple[list[tuple[float, float]], float, float]:
    """(cumulative buckets [(le, count)], sum, count) of an unlabelled histogram in an exposition."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        if family.name == name:
            buckets = [(float(s.labels["le"]), s.value) for s in family.samples if s.name.endswith("_bucket")]
            total = next(s.value for s in family.samples if s.name.endswith("_sum"))
            count = next(s.value for s in family.samples if s.name.endswith("_count"))
            return sorted(buckets), total, count
    raise KeyError(name)


def bucket_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """PromQL's histogram_quantile: linear interpolation inside the bucket holding the rank."""
    total = buckets[-1][1]
    rank, lower, below = q * total, 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if le == float("inf"):
                return lower
            return lower + (le - lower) * (rank - below) / max(count - below, 1e-12)
        lower, below = le, count
    return lower


def apiserver_latency(cluster: Any) -> dict[tuple[str, str], tuple[float, float]]:
    """(verb, resource) -> (requests, mean seconds) from the API server's own request histogram."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"{cluster.server}/metrics", context=cluster.ssl_context(), timeout=30) as resp:
        text = resp.read().decode()
    sums: dict[tuple[str, str], list[float]] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "apiserver_request_duration_seconds":
            continue
        for sample in family.samples:
            suffix = sample.name.rpartition("_")[2]
            if suffix in ("sum", "count"):
                lab = sample.labels
                verb = lab["verb"] + ("/" + lab["subresource"] if lab.get("subresource") else "")
                acc = sums.setdefault((verb, lab["resource"]), [0.0, 0.0])
                acc[0 if suffix == "count" else 1] += sample.value
    return {k: (n, total / n) for k, (n, total) in sums.items() if n}


def list_latency(api_client: Any, n: int = 30) -> dict[str, float]:
    """Median seconds of the controller's per-reconcile Job LIST (one run's label) with N Jobs in the namespace:
    a consistent read (what observe() does) against resourceVersion=0 (the API server's watch cache)."""
    from kubernetes import client

    batch = client.BatchV1Api(api_client)
    selector = f"{MANAGED_SELECTOR},{LABEL_RUN}=run-0007"
    out = {}
    cases: tuple[tuple[str, dict[str, Any]], ...] = (
        ("consistent", {}),
        ("resourceVersion=0", {"resource_version": "0"}),
    )
    for label, kw in cases:
        seconds = []
        for _ in range(n):
            t0 = time.perf_counter()
            batch.list_namespaced_job(NS, label_selector=selector, _preload_content=False, **kw)
            seconds.append(time.perf_counter() - t0)
        out[label] = statistics.median(seconds)
    return out


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# --------------------------------------------------------------------------- the benchmark


def api_round_trip(api_client: Any, n: int = 40) -> list[float]:
    """Seconds per GET of one GodRun (outside the watched namespace): the API server's latency on this host."""
    from kubernetes import client

    custom = client.CustomObjectsApi(api_client)
    custom.create_namespaced_custom_object(G, V, "default", P, body("probe"))
    seconds = []
    for _ in range(n):
        t0 = time.perf_counter()
        custom.get_namespaced_custom_object(G, V, "default", P, "probe")
        seconds.append(time.perf_counter() - t0)
    return seconds


def start_controller(args: argparse.Namespace, cluster: Any, metrics_port: int) -> tuple[subprocess.Popen, dict]:
    dump = cluster.root / "controller-timing.json"
    argv = [sys.executable, str(Path(__file__).resolve()), "--child", str(dump)]
    argv += [f"--kubeconfig={cluster.kubeconfig}", f"--namespace={NS}", f"--metrics-port={metrics_port}"]
    argv += ["--health-port=0", "--no-leader-elect", f"--workers={args.workers}", "--log-level=WARNING"]
    env = dict(os.environ, GODRUN_BENCH_DUMP=str(dump))
    if args.profile:
        env["GODRUN_BENCH_PROFILE"] = str(cluster.root / "reconcile.prof")
    with (cluster.root / "controller.log").open("wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
    _wait_metrics(metrics_port, proc)
    return proc, env


def create_all(cluster: Any, names: list[str], clients: int) -> dict[str, float]:
    from kubernetes import client

    apis = [client.CustomObjectsApi(cluster.api_client()) for _ in range(clients)]
    created: dict[str, float] = {}

    def create(i: int) -> None:
        apis[i % clients].create_namespaced_custom_object(G, V, NS, P, body(names[i]))
        created[names[i]] = time.monotonic()

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(create, range(len(names))))
    return created


def run(args: argparse.Namespace) -> int:
    from godrun.testcluster import Cluster, free_port, missing_binaries

    if missing := missing_binaries():
        print(f"control-plane binaries missing ({', '.join(missing)}): run `make cluster-bin`")
        return 1
    fig: dict[str, Any] = {"load": os.getloadavg()}
    cluster = Cluster(keep_root=args.keep).start()
    fig["apiserver_start"] = cluster.start_seconds
    ctrl = None
    try:
        apply_crd(cluster.api_client())
        cluster.create_namespace(NS)
        fig["rtt"] = api_round_trip(cluster.api_client())
        metrics_port = free_port()
        ctrl, env = start_controller(args, cluster, metrics_port)
        fig["idle_rss"] = _kb(_proc_status(ctrl.pid)["VmRSS"]) / 1024
        names = [f"run-{i:04d}" for i in range(args.runs)]
        watcher = Watcher(cluster.api_client(), set(names))
        time.sleep(1.0)  # the watches are open
        base = apiserver_latency(cluster)
        pids = {"controller": ctrl.pid} | {p.name: p.popen.pid for p in cluster.processes}
        cpu0 = {k: cpu_seconds(pid) for k, pid in pids.items()}
        t0 = fig["t0"] = time.monotonic()
        created = create_all(cluster, names, args.clients)
        fig["t_created"] = time.monotonic() - t0
        deadline = time.monotonic() + args.timeout
        while not watcher.done() and time.monotonic() < deadline and ctrl.poll() is None:
            time.sleep(0.1)
        fig["t_all"], fig["ok"] = time.monotonic() - t0, watcher.done()
        fig["cpu"] = {k: cpu_seconds(pid) - cpu0[k] for k, pid in pids.items()}
        server = apiserver_latency(cluster)
        fig["server"] = {k: (n - base.get(k, (0, 0))[0], v) for k, (n, v) in server.items()}
        fig["load_end"] = os.getloadavg()
        time.sleep(args.settle)  # the reconciles triggered by the status writes and Job events
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as resp:
            fig["metrics"] = resp.read().decode()
        fig["t_read"], fig["status"] = time.monotonic(), _proc_status(ctrl.pid)
        ctrl.send_signal(signal.SIGTERM)
        ctrl.wait(30)
        fig["lists"] = list_latency(cluster.api_client())
        watcher.stop.set()
        fig["timing"] = json.loads(Path(env["GODRUN_BENCH_DUMP"]).read_text())
        fig["to_job"] = [watcher.first_job[n] - created[n] for n in names if n in watcher.first_job]
        fig["last_job"] = max(watcher.first_job.values(), default=t0) - t0
        fig["training"] = len(watcher.training)
        report(args, fig)
        if args.profile:
            print(
                f"\nwhere reconcile time goes (cProfile of every Controller.process, wall clock, top {args.profile}):"
            )
            pstats.Stats(env["GODRUN_BENCH_PROFILE"]).sort_stats("cumulative").print_stats(args.profile)
        return 0 if fig["ok"] else 1
    finally:
        if ctrl is not None and ctrl.poll() is None:
            ctrl.kill()
        cluster.stop()


def _wait_metrics(port: int, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"controller exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2):
                time.sleep(1.0)  # the watches list (empty namespace) right after the server starts
                return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError("controller /metrics not up")


def _ms(seconds: float) -> str:
    return f"{1000 * seconds:.1f}"


def report(args: argparse.Namespace, fig: dict[str, Any]) -> None:
    # time.monotonic is CLOCK_MONOTONIC in both processes: keep the reconciles that started before /metrics was read
    durations = [d for t, d in fig["timing"]["samples"] if t <= fig["t_read"]]
    text, status, rtt, to_job = fig["metrics"], fig["status"], fig["rtt"], fig["to_job"]
    buckets, h_sum, h_count = histogram(text, "godrun_reconcile_duration_seconds")
    errors = next(line.split()[-1] for line in text.splitlines() if line.startswith("godrun_reconcile_errors_total "))
    after = [d for t, d in fig["timing"]["samples"] if fig["t0"] + fig["t_created"] < t <= fig["t_read"]]
    n_burst = sum(1 for t, _ in fig["timing"]["samples"] if t <= fig["t0"] + fig["t_all"])
    cpu = fig["cpu"]
    peak = _kb(fig["timing"]["status"].get("VmHWM") or status["VmHWM"]) / 1024
    rows = [
        ("host load average (1/5/15 min) at start", " / ".join(f"{x:.1f}" for x in fig["load"])),
        ("etcd + kube-apiserver start to /readyz", f"{fig['apiserver_start']:.1f} s"),
        ("API round trip, GET GodRun p50 / p99", f"{_ms(statistics.median(rtt))} / {_ms(quantile(rtt, 0.99))} ms"),
        ("GodRuns created at once", f"{args.runs} ({args.clients} client threads, {fig['t_created']:.2f} s)"),
        ("controller workers", str(args.workers)),
        ("reconciles (own timing / histogram)", f"{len(durations)} / {h_count:.0f}; errors {errors}"),
        ("reconcile p50 (own timing)", f"{_ms(statistics.median(durations))} ms"),
        ("reconcile p99 (own timing)", _goal(quantile(durations, 0.99), GOAL_P99_S, 1000, "ms")),
        (
            "reconcile p50 / p99 after the creations",
            f"{_ms(statistics.median(after))} / {_ms(quantile(after, 0.99))} ms ({len(after)} reconciles)"
            if after
            else "n/a",
        ),
        ("reconcile max / mean", f"{_ms(max(durations))} / {_ms(h_sum / max(h_count, 1))} ms"),
        (
            "reconcile p50 / p99 (histogram)",
            f"{_ms(bucket_quantile(0.5, buckets))} / {_ms(bucket_quantile(0.99, buckets))} ms",
        ),
        ("create -> first Job p50 / p99", f"{statistics.median(to_job):.2f} / {quantile(to_job, 0.99):.2f} s"),
        ("time until all have their first Job", f"{fig['last_job']:.2f} s" + ("" if fig["ok"] else " (TIMED OUT)")),
        ("time until all Training", f"{fig['t_all']:.2f} s ({fig['training']}/{args.runs})"),
        (
            "CPU seconds until all Training: controller",
            f"{cpu['controller']:.2f} s ({_ms(cpu['controller'] / max(n_burst, 1))} ms per reconcile)",
        ),
        (
            "CPU seconds until all Training: apiserver / etcd",
            f"{cpu['kube-apiserver']:.2f} / {cpu['etcd']:.2f} s (host: {os.cpu_count()} CPUs)",
        ),
        ("host load average (1 min) at the end", f"{fig['load_end'][0]:.1f}"),
        ("controller RSS idle / end", f"{fig['idle_rss']:.1f} / {_kb(status['VmRSS']) / 1024:.1f} MB"),
        ("controller peak RSS (VmHWM)", _goal(peak, GOAL_RSS_MB, 1, "MB")),
    ]
    width = max(len(k) for k, _ in rows)
    print(f"{'figure':<{width}}  value")
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    busy = sorted(((n, k, mean) for k, (n, mean) in fig["server"].items() if n >= 50), reverse=True)
    print("\nAPI server, requests during the run (its own apiserver_request_duration_seconds; mean since start):")
    for n, (verb, resource), mean in busy[:10]:
        print(f"  {verb:<16} {resource:<12} {n:6.0f} requests  mean {_ms(mean)} ms")
    lists = ", ".join(f"{k} {_ms(v)} ms" for k, v in fig["lists"].items())
    print(f"one run's Job LIST with {args.runs} Jobs in the namespace, idle controller, median: {lists}")


def _goal(value: float, goal: float, scale: float, unit: str) -> str:
    mark = "ok" if value <= goal else "MISSED"
    return f"{scale * value:.1f} {unit} (goal <= {scale * goal:.0f} {unit}: {mark})"


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        return child(sys.argv[2:])
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=200)
    p.add_argument("--workers", type=int, default=2, help="controller --workers (its default)")
    p.add_argument("--clients", type=int, default=8, help="threads creating the GodRuns")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for every first Job")
    p.add_argument("--settle", type=float, default=3.0, help="seconds of follow-up reconciles before reading")
    p.add_argument("--profile", type=int, default=0, metavar="N", help="profile reconciles; print the top N")
    p.add_argument("--keep", action="store_true", help="keep the cluster's temp folder (logs)")
    return run(p.parse_args())


if __name__ == "__main__":
    sys.exit(main())
