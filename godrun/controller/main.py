"""`godrun controller`: run the GodRun operator against the cluster from in-cluster config or a kubeconfig."""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import threading
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from kubernetes import client, config
from prometheus_client import start_http_server

from godrun.contract.words import MANAGER
from godrun.controller.kube import KubeApi, KubeExecutor
from godrun.controller.loop import Controller, LoopConfig
from godrun.core.machine import DEFAULT_POLLING, Polling
from godrun.core.prometheus import ControllerMetrics
from godrun.errors import InputError, tcp_port

log = logging.getLogger("godrun.controller")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="godrun controller", description="Run the GodRun Kubernetes controller.")
    p.add_argument("--namespace", default="", help="watch only this namespace (default: all namespaces)")
    p.add_argument("--kubeconfig", default=None, help="kubeconfig file (default: in-cluster, else $KUBECONFIG)")
    p.add_argument("--metrics-port", type=tcp_port, default=8080, help="Prometheus /metrics port (0 disables)")
    p.add_argument("--health-port", type=tcp_port, default=8081, help="/healthz and /readyz port (0 disables)")
    p.add_argument("--leader-elect", action=argparse.BooleanOptionalAction, default=True, help="Lease leader election")
    p.add_argument("--lease-name", default=MANAGER, help="name of the coordination.k8s.io Lease")
    p.add_argument(
        "--lease-namespace", default=None, help="namespace of the Lease (default: --namespace or $POD_NAMESPACE)"
    )
    p.add_argument("--identity", default=None, help="leader-election identity (default: $POD_NAME or hostname)")
    p.add_argument("--lease-duration", type=int, default=15, help="seconds a Lease holds without renewal")
    p.add_argument("--renew-deadline", type=int, default=10, help="seconds the leader keeps trying to renew")
    p.add_argument("--retry-period", type=int, default=2, help="seconds between Lease attempts")
    p.add_argument("--resync-seconds", type=float, default=300.0, help="seconds between full resyncs of every run")
    p.add_argument(
        "--progress-seconds",
        type=float,
        default=DEFAULT_POLLING.progress_seconds,
        help="how often a Pending or Training run is looked at again (its trainer's metrics polled)",
    )
    p.add_argument(
        "--verdict-seconds",
        type=float,
        default=DEFAULT_POLLING.verdict_seconds,
        help="how often a finished evaluation whose verdict is not readable yet is looked at again",
    )
    p.add_argument(
        "--progress-source",
        choices=("direct", "proxy", "off"),
        default="direct",
        help="read trainer metrics from the pod IP, through the API server's pod proxy, or not at all",
    )
    p.add_argument("--workers", type=int, default=2, help="reconcile worker threads")
    p.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ...")
    return p


def load_config(kubeconfig: str | None) -> None:
    if kubeconfig:
        config.load_kube_config(config_file=kubeconfig)
        return
    try:
        config.load_incluster_config()
    except config.ConfigException:
        try:
            config.load_kube_config()
        except (config.ConfigException, OSError) as exc:
            raise InputError(f"--kubeconfig: no in-cluster config and no usable kubeconfig ({exc})") from exc


class Health:
    """/healthz: the process serves; /readyz: the watches have listed (or this replica is a standby)."""

    def __init__(self, ready: Callable[[], bool]) -> None:
        self.ready = ready

    def serve(self, port: int) -> ThreadingHTTPServer:
        health = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.startswith("/healthz"):
                    ok = True
                elif self.path.startswith("/readyz"):
                    ok = health.ready()
                else:
                    self.send_error(404)
                    return
                body = b"ok\n" if ok else b"not ready\n"
                self.send_response(200 if ok else 503)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        server = ThreadingHTTPServer(("", port), Handler)
        threading.Thread(target=server.serve_forever, name="health", daemon=True).start()
        return server


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.workers < 1:
        raise InputError("--workers must be >= 1")
    if args.leader_elect and not (args.lease_duration > args.renew_deadline > 1.2 * args.retry_period >= 1.2):
        raise InputError("need --lease-duration > --renew-deadline > 1.2 x --retry-period, and --retry-period >= 1")
    load_config(args.kubeconfig)
    identity = args.identity or os.environ.get("POD_NAME") or socket.gethostname()
    api = KubeApi.from_client(client.ApiClient())
    metrics = ControllerMetrics()
    executor = KubeExecutor(api, identity=identity, progress=args.progress_source)
    cfg = LoopConfig(
        namespace=args.namespace or None,
        workers=args.workers,
        resync_seconds=args.resync_seconds,
        polling=Polling(progress_seconds=args.progress_seconds, verdict_seconds=args.verdict_seconds),
    )
    controller = Controller(api, executor, metrics, cfg)
    leading = threading.Event()
    if args.metrics_port:
        start_http_server(args.metrics_port, registry=metrics.registry)
    if args.health_port:
        Health(lambda: controller.ready() or (args.leader_elect and not leading.is_set())).serve(args.health_port)
    log.info("godrun controller %s watching %s", identity, args.namespace or "all namespaces")
    if not args.leader_elect:
        leading.set()
        metrics.leader.set(1)
        return _run_until_interrupted(controller)
    return _run_with_lease(args, identity, controller, metrics, leading)


def _run_until_interrupted(controller: Controller) -> int:
    try:
        controller.run()
    except KeyboardInterrupt:
        controller.shutdown()
    return 0


def _run_with_lease(
    args: argparse.Namespace,
    identity: str,
    controller: Controller,
    metrics: ControllerMetrics,
    leading: threading.Event,
) -> int:
    from kubernetes.leaderelection import electionconfig, leaderelection
    from kubernetes.leaderelection.resourcelock.leaselock import LeaseLock

    lease_ns = args.lease_namespace or args.namespace or os.environ.get("POD_NAMESPACE") or "default"

    def started() -> None:
        leading.set()
        metrics.leader.set(1)
        log.info("%s leads (Lease %s/%s)", identity, lease_ns, args.lease_name)
        controller.run()

    def stopped() -> None:
        metrics.leader.set(0)
        log.error(
            "%s lost the Lease %s/%s; exiting so that a fresh process can campaign", identity, lease_ns, args.lease_name
        )
        controller.shutdown()

    lock = LeaseLock(args.lease_name, lease_ns, identity)
    cfg = electionconfig.Config(lock, args.lease_duration, args.renew_deadline, args.retry_period, started, stopped)
    try:
        leaderelection.LeaderElection(cfg).run()
    except KeyboardInterrupt:
        controller.shutdown()
        return 0
    return 1  # run() returns only after leadership was lost


if __name__ == "__main__":
    sys.exit(main())
