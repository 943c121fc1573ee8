"""A real control plane for tests and benchmarks: etcd + kube-apiserver on loopback, built by
tests/cluster/build.sh (`make cluster-bin`) into the cache `cluster_bin()` names.

`Cluster.start()` writes a throw-away PKI (CA, serving cert, admin client cert in
system:masters, service-account signing key), starts etcd and kube-apiserver on free
ports with client-certificate auth and RBAC, waits for /readyz and writes an admin
kubeconfig. There is no controller-manager, scheduler or kubelet: namespaces are never
finalised, nothing is garbage-collected, ServiceAccounts get no token Secrets (use the
TokenRequest API, as `service_account_kubeconfig` does) and namespaces get no `default`
ServiceAccount unless `create_namespace` makes one.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

BINARIES = ("kube-apiserver", "kubectl", "etcd", "helm")
SA_ISSUER = "https://kubernetes.default.svc.cluster.local"
SERVICE_CIDR = "10.96.0.0/24"
SERVICE_IP = "10.96.0.1"  # the `kubernetes` Service: the first address of SERVICE_CIDR


def cluster_bin() -> Path:
    """Where tests/cluster/build.sh puts etcd, kube-apiserver, kubectl and helm."""
    cache = Path(os.environ.get("GODRUN_CACHE") or Path.home() / ".cache" / "godrun")
    return Path(os.environ.get("GODRUN_CLUSTER_BIN") or cache / "cluster-bin")


def bin_dir() -> Path:
    return cluster_bin()


def missing_binaries(directory: Path | None = None) -> list[str]:
    directory = directory or bin_dir()
    return [b for b in BINARIES if not os.access(directory / b, os.X_OK)]


def in_netns(name: str) -> list[str]:
    """The prefix that runs a command in network namespace `name` and nowhere else: unlike `ip netns exec`, nsenter
    keeps this mount namespace, so the cgroup mounts stay visible (kubelet) and mounts stay shared (containerd)."""
    return ["nsenter", f"--net=/var/run/netns/{name}", "--"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def write_pki(pki: Path, server_ips: Sequence[str] = ("127.0.0.1",)) -> None:
    """CA, apiserver serving cert (valid for `server_ips`), admin client cert (O=system:masters), SA signing key;
    all EC P-256."""
    pki.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    _openssl(
        "req",
        "-x509",
        *ec,
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=godrun-test-ca",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        cwd=pki,
    )
    leaves = {
        "apiserver": (
            "/CN=kube-apiserver",
            "serverAuth",
            "subjectAltName="
            + ",".join(f"IP:{ip}" for ip in server_ips)
            + ",DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc",
        ),
        "admin": ("/O=system:masters/CN=godrun-test-admin", "clientAuth", None),
    }
    for name, (subject, usage, san) in leaves.items():
        _openssl("req", "-new", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subject, cwd=pki)
        ext = pki / f"{name}.ext"
        ext.write_text(
            f"keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage={usage}\n"
            + (f"{san}\n" if san else "")
        )
        _openssl(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            f"{name}.crt",
            "-days",
            "2",
            "-extfile",
            ext.name,
            cwd=pki,
        )
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "sa.key", cwd=pki)
    _openssl("pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=pki)


def kubeconfig_dict(server: str, ca_file: Path, user: dict, name: str = "godrun-test") -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": {"server": server, "certificate-authority": str(ca_file)}}],
        "users": [{"name": name, "user": user}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
        "current-context": name,
    }


class ToolError(subprocess.CalledProcessError):
    """A failed kubectl/helm call; its message carries the tool's stderr."""

    def __str__(self) -> str:
        return f"{super().__str__()}\n{(self.stderr or '').strip()[-2000:]}"


@dataclass
class Process:
    name: str
    popen: subprocess.Popen
    log: Path

    def tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self, grace: float = 10.0) -> None:
        if self.popen.poll() is not None:
            return
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(grace)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(5)


@dataclass
class Cluster:
    """A running etcd + kube-apiserver; use as a context manager or call start()/stop().

    By default both listen on free loopback ports of this network namespace. With `netns` they run inside
    that (test-made) network namespace and the API server listens on `address`:6443, reachable from here
    through the namespace's veth and advertised as the `kubernetes` Service's endpoint (tests/k8s/kubenode.py).
    """

    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="godrun-k8s-")))
    binaries: Path = field(default_factory=bin_dir)
    keep_root: bool = False
    netns: str | None = None
    address: str = "127.0.0.1"
    server: str = ""
    kubeconfig: Path = field(init=False)
    start_seconds: float = 0.0
    processes: list[Process] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.kubeconfig = self.root / "admin.kubeconfig"

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def ca_file(self) -> Path:
        return self.pki / "ca.crt"

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self, timeout: float = 180.0) -> Cluster:
        missing = missing_binaries(self.binaries)
        if missing:
            raise FileNotFoundError(f"control-plane binaries missing in {self.binaries}: {', '.join(missing)}")
        t0 = time.monotonic()
        try:
            write_pki(self.pki, [self.address, SERVICE_IP] if self.netns else [self.address])
            etcd_url = self._start_etcd()
            port = self._start_apiserver(etcd_url)
            self.server = f"https://{self.address}:{port}"
            self._wait_ready(timeout)
            self.kubeconfig.write_text(yaml.safe_dump(self._admin_kubeconfig()))
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - t0
        return self

    def stop(self) -> None:
        for proc in reversed(self.processes):
            proc.stop(grace=3.0)  # a test server needs no graceful drain
        self.processes.clear()
        if not self.keep_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def _port(self, fixed: int) -> int:
        """`fixed` inside a namespace of our own, else a free loopback port."""
        return fixed if self.netns else free_port()

    def _spawn(self, name: str, argv: list[str]) -> Process:
        if self.netns:
            argv = [*in_netns(self.netns), *argv]
        log = self.root / f"{name}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.root,
                start_new_session=True,
            )
        proc = Process(name, popen, log)
        self.processes.append(proc)
        return proc

    def _start_etcd(self) -> str:
        client, peer = self._port(2379), self._port(2380)
        client_url, peer_url = f"http://127.0.0.1:{client}", f"http://127.0.0.1:{peer}"
        self._spawn(
            "etcd",
            [
                str(self.binaries / "etcd"),
                "--name",
                "godrun-test",
                "--data-dir",
                str(self.root / "etcd"),
                "--listen-client-urls",
                client_url,
                "--advertise-client-urls",
                client_url,
                "--listen-peer-urls",
                peer_url,
                "--initial-advertise-peer-urls",
                peer_url,
                "--initial-cluster",
                f"godrun-test={peer_url}",
                "--initial-cluster-state",
                "new",
                "--unsafe-no-fsync",
                "--log-level",
                "warn",
                "--quota-backend-bytes",
                str(2**31),
            ],
        )
        return client_url

    def _start_apiserver(self, etcd_url: str) -> int:
        port, pki = self._port(6443), self.pki
        loopback = self.address.startswith("127.")
        self._spawn(
            "kube-apiserver",
            [
                str(self.binaries / "kube-apiserver"),
                f"--bind-address={self.address}",
                f"--advertise-address={self.address}",
                f"--secure-port={port}",
                f"--etcd-servers={etcd_url}",
                "--storage-backend=etcd3",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                "--authorization-mode=Node,RBAC",
                "--anonymous-auth=false",
                f"--service-account-issuer={SA_ISSUER}",
                f"--api-audiences={SA_ISSUER}",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                # it refuses a loopback advertise address; a node's address becomes the `kubernetes` endpoint
                f"--endpoint-reconciler-type={'none' if loopback else 'lease'}",
                f"--kubelet-client-certificate={pki / 'admin.crt'}",
                f"--kubelet-client-key={pki / 'admin.key'}",
                "--kubelet-preferred-address-types=InternalIP",  # a test node's name resolves nowhere
                "--allow-privileged=true",
                "--profiling=false",
                "--v=1",
            ],
        )
        return port

    def ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        ctx.load_cert_chain(str(self.pki / "admin.crt"), str(self.pki / "admin.key"))
        return ctx

    def _wait_ready(self, timeout: float) -> None:
        ctx, deadline, last = self.ssl_context(), time.monotonic() + timeout, ""
        while time.monotonic() < deadline:
            for proc in self.processes:
                if proc.popen.poll() is not None:
                    raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}:\n{proc.tail()}")
            try:
                with urllib.request.urlopen(f"{self.server}/readyz", context=ctx, timeout=5) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError) as err:
                last = str(err)
            time.sleep(0.25)
        raise TimeoutError(f"kube-apiserver not ready after {timeout:.0f}s ({last}):\n{self.processes[-1].tail()}")

    def _admin_kubeconfig(self) -> dict:
        user = {"client-certificate": str(self.pki / "admin.crt"), "client-key": str(self.pki / "admin.key")}
        return kubeconfig_dict(self.server, self.ca_file, user)

    # -- clients ---------------------------------------------------------------------------------
    def api_client(self, kubeconfig: Path | None = None):  # -> kubernetes.client.ApiClient
        from kubernetes import config

        return config.new_client_from_config(config_file=str(kubeconfig or self.kubeconfig))

    def get(self, path: str) -> dict:
        """GET an API path with the admin identity (e.g. '/version')."""
        with urllib.request.urlopen(f"{self.server}{path}", context=self.ssl_context(), timeout=10) as resp:
            return json.loads(resp.read())

    def _run_tool(
        self, tool: str, args: Sequence[str], kubeconfig: Path | None, input: str | None, check: bool, timeout: float
    ) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "KUBECONFIG": str(kubeconfig or self.kubeconfig), "HOME": str(self.root)}
        argv = [str(self.binaries / tool), *args]
        res = subprocess.run(argv, env=env, input=input, capture_output=True, text=True, timeout=timeout)
        if check and res.returncode != 0:
            raise ToolError(res.returncode, argv, res.stdout, res.stderr)
        return res

    def kubectl(
        self,
        *args: str,
        kubeconfig: Path | None = None,
        input: str | None = None,
        check: bool = True,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        return self._run_tool("kubectl", args, kubeconfig, input, check, timeout)

    def helm(
        self,
        *args: str,
        kubeconfig: Path | None = None,
        input: str | None = None,
        check: bool = True,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        return self._run_tool("helm", args, kubeconfig, input, check, timeout)

    def apply_crd(self, path: Path) -> None:
        """Apply a CRD (server-side, idempotent) and wait until it is Established."""
        self.kubectl("apply", "--server-side", "--force-conflicts", "--field-manager=godrun-tests", "-f", str(path))
        self.wait_crd_established(yaml.safe_load(path.read_text())["metadata"]["name"])

    def wait_crd_established(self, name: str, timeout: float = 60) -> None:
        """Until the CRD's Established condition is True. Not `kubectl wait`: it fails at once, not waiting,
        when it reads the CRD before the API server has written any status condition (seen in CI)."""
        from kubernetes import client

        api = client.ApiextensionsV1Api(self.api_client())
        deadline = time.monotonic() + timeout
        while True:
            status = api.read_custom_resource_definition(name).status
            conditions = (status.conditions if status else None) or []
            if any(c.type == "Established" and c.status == "True" for c in conditions):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"crd/{name} not Established after {timeout:g} s: {conditions}")
            time.sleep(0.1)

    # -- namespaces and identities ---------------------------------------------------------------
    def create_namespace(self, name: str, default_service_account: bool = True) -> str:
        """Create a namespace (and its `default` ServiceAccount, which no controller makes here)."""
        from kubernetes import client

        api = client.CoreV1Api(self.api_client())
        api.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
        if default_service_account:
            self.ensure_service_account(name, "default")
        return name

    def ensure_service_account(self, namespace: str, name: str) -> None:
        from kubernetes import client
        from kubernetes.client.rest import ApiException

        api = client.CoreV1Api(self.api_client())
        try:
            api.create_namespaced_service_account(
                namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=name))
            )
        except ApiException as err:
            if err.status != 409:
                raise

    def service_account_token(self, namespace: str, name: str, seconds: int = 3600) -> str:
        from kubernetes import client

        api = client.CoreV1Api(self.api_client())
        spec = client.V1TokenRequestSpec(audiences=[SA_ISSUER], expiration_seconds=seconds)
        status = api.create_namespaced_service_account_token(
            name, namespace, client.AuthenticationV1TokenRequest(spec=spec)
        ).status
        assert status is not None and status.token, f"no token for {namespace}/{name}"
        return status.token

    def service_account_kubeconfig(self, namespace: str, name: str, create: bool = True) -> Path:
        """A kubeconfig acting as system:serviceaccount:<namespace>:<name> (token from TokenRequest)."""
        if create:
            self.ensure_service_account(namespace, name)
        cfg = kubeconfig_dict(self.server, self.ca_file, {"token": self.service_account_token(namespace, name)})
        cfg["contexts"][0]["context"]["namespace"] = namespace
        path = self.root / f"sa-{namespace}-{name}.kubeconfig"
        path.write_text(yaml.safe_dump(cfg))
        return path
