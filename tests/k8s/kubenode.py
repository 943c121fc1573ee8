"""A real Kubernetes node for tests: the whole cluster inside one network namespace the test makes.

`KubeNode.start()` creates a network namespace (a veth pair links it to this one, so the tests reach the API
server at the node's address) and starts in it: containerd (Debian's, CRI with `restrict_oom_score_adj`, the
CNI bridge plugin), etcd and kube-apiserver (godrun/testcluster.py), kube-controller-manager, kube-scheduler,
kubelet (cgroupfs driver under a cgroup root of its own, `failCgroupV1: false`), kube-proxy (iptables mode) and
CoreDNS behind the `kube-dns` Service. The node binaries come from tests/cluster/build_node.sh.

`stop()` undoes all of it even after a failed start: every process it started and every process left in its
cgroups or naming its root (containerd shims, containers), every mount under its root, the network namespace
(and with it the bridge, the veths and every iptables chain kube-proxy and CNI wrote), the cgroups, the files.

Facts of the machines this runs on that shaped it: negative oom_score_adj is refused (no CAP_SYS_RESOURCE), so
containerd's CRI must not ask for it; the cgroup hierarchy is v1, which kubelet v1.37 refuses unless told; no
registry is reachable, so images are imported (`import_image`) and pods use `imagePullPolicy: Never`.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from godrun.testcluster import SERVICE_CIDR, Cluster, Process, cluster_bin, in_netns
from k8s.images import pause_image

NODE_BINARIES = ("kubelet", "kube-controller-manager", "kube-scheduler", "kube-proxy", "coredns")
HOST_TOOLS = ("nsenter", "containerd", "containerd-shim-runc-v2", "runc", "ctr", "ip", "iptables", "gcc", "mmdebstrap")
CNI_BIN = Path("/usr/lib/cni")
POD_CIDR = "10.244.0.0/24"
DNS_IP = "10.96.0.10"
PAUSE_IMAGE = "registry.k8s.io/pause:3.10.2"
CGROUP_FS = Path("/sys/fs/cgroup")


def node_bin() -> Path:
    """Where tests/cluster/build_node.sh puts kubelet, kube-controller-manager, kube-scheduler, kube-proxy, coredns."""
    cache = Path(os.environ.get("GODRUN_CACHE") or Path.home() / ".cache" / "godrun")
    return Path(os.environ.get("GODRUN_NODE_BIN") or cache / "node-bin")


def missing_node_parts() -> list[str]:
    """What this machine lacks to run a KubeNode, each with how to get it; empty when it can."""
    missing = [f"{b} (make node-bin)" for b in NODE_BINARIES if not os.access(node_bin() / b, os.X_OK)]
    debian = "apt-get install containerd runc iproute2 iptables gcc mmdebstrap"
    missing += [f"{t} ({debian})" for t in HOST_TOOLS if not shutil.which(t)]
    if not (CNI_BIN / "bridge").exists():
        missing.append("CNI plugins in /usr/lib/cni (apt-get install containernetworking-plugins)")
    if os.geteuid() != 0:
        missing.append("root (a node needs network namespaces, mounts and cgroups)")
    return missing


def _run(*argv: str, netns: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    if netns:
        argv = (*in_netns(netns), *argv)
    res = subprocess.run(argv, capture_output=True, text=True)
    if check and res.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited with {res.returncode}: {res.stderr.strip()}")
    return res


def _link_subnet(ident: str) -> str:
    """The /30 that links a node's namespace to this one, as its first three octets."""
    return f"10.250.{int(ident, 16) % 250 + 1}"


def _free_ident() -> str:
    """A node name no running node (of this or another test session on the machine) uses, nor its link subnet."""
    taken = _run("ip", "-o", "-4", "addr", "show").stdout
    while True:
        ident = secrets.token_hex(3)
        if f" {_link_subnet(ident)}." not in taken and not (Path("/var/run/netns") / f"godrun-{ident}").exists():
            return ident


# -- the node ----------------------------------------------------------------------------------------------


@dataclass
class KubeNode:
    """A one-node cluster in its own network namespace; a context manager, or start()/stop()."""

    root: Path
    name: str = "godrun-node"
    cache: Path = field(default_factory=lambda: node_bin().parent)
    keep_root: bool = False
    ident: str = field(default_factory=lambda: _free_ident())
    processes: list[Process] = field(default_factory=list)
    cluster: Cluster = field(init=False)
    start_seconds: float = 0.0

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.netns = f"godrun-{self.ident}"
        self.cgroup_root = f"/godrun-{self.ident}"
        self.host_ip, self.node_ip = (f"{_link_subnet(self.ident)}.{host}" for host in (1, 2))
        self.cluster = Cluster(
            root=self.root / "control-plane", binaries=cluster_bin(), netns=self.netns, address=self.node_ip
        )
        self.cluster.root.mkdir(exist_ok=True)

    @property
    def run_dir(self) -> Path:
        """containerd's state and sockets: a short path (a unix socket path must stay under 104 bytes)."""
        return Path("/run") / self.netns

    @property
    def containerd_socket(self) -> Path:
        return self.run_dir / "containerd.sock"

    def __enter__(self) -> KubeNode:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- start ---------------------------------------------------------------------------------------------
    def start(self, timeout: float = 240.0) -> KubeNode:
        t0 = time.monotonic()
        try:
            self._make_netns()
            self._make_cgroups()
            self._start_containerd()
            self.import_image(pause_image(self.cache, PAUSE_IMAGE).archive)
            self.cluster.start(timeout)
            self.kubeconfig = self.cluster.kubeconfig
            self._start_controllers()
            self._start_coredns()
            self._start_kubelet()
            self._start_kube_proxy()
            self._wait_node_ready(t0 + timeout)
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - t0
        return self

    def _make_netns(self) -> None:
        host_if, node_if = f"gd{self.ident}h", f"gd{self.ident}n"
        _run("ip", "netns", "add", self.netns)
        _run("ip", "link", "add", host_if, "type", "veth", "peer", "name", node_if, "netns", self.netns)
        _run("ip", "addr", "add", f"{self.host_ip}/30", "dev", host_if)
        _run("ip", "link", "set", host_if, "up")
        for cmd in (
            ("ip", "link", "set", "lo", "up"),
            ("ip", "addr", "add", f"{self.node_ip}/30", "dev", node_if),
            ("ip", "link", "set", node_if, "up"),
            ("ip", "route", "add", "default", "via", self.host_ip),
            ("sysctl", "-qw", "net.ipv4.ip_forward=1"),
            ("sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=1"),
        ):
            _run(*cmd, netns=self.netns)

    def _cgroup_dirs(self) -> Iterator[Path]:
        for hierarchy in sorted(CGROUP_FS.iterdir()):
            if hierarchy.is_dir() and not hierarchy.is_symlink() and hierarchy.name != "unified":
                yield hierarchy / self.cgroup_root.lstrip("/")

    def _make_cgroups(self) -> None:
        for path in self._cgroup_dirs():
            path.mkdir(exist_ok=True)
            if path.parent.name == "cpuset":  # a cpuset cgroup takes no task until it has cpus and mems
                for knob in ("cpuset.cpus", "cpuset.mems"):
                    (path / knob).write_text((path.parent / knob).read_text())

    def spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Process:
        log = self.root / f"{name}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(
                [*in_netns(self.netns), *argv],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.root,
                start_new_session=True,
                env={**os.environ, **(env or {})},
            )
        proc = Process(name, popen, log)
        self.processes.append(proc)
        return proc

    def _write(self, name: str, data: dict | str) -> Path:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
        return path

    def _start_containerd(self) -> None:
        top = self.root / "containerd"
        cni = {
            "cniVersion": "1.0.0",
            "name": "godrun-pods",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": "cni0",
                    "isGateway": True,
                    "ipMasq": True,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": POD_CIDR}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": str(top / "ipam"),
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        }
        self._write("containerd/net.d/10-godrun.conflist", json.dumps(cni))
        config = f"""version = 2
root = "{top / "root"}"
state = "{self.run_dir / "state"}"
[grpc]
  address = "{self.containerd_socket}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  enable_cdi = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN}"
    conf_dir = "{top / "net.d"}"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
"""
        path = self._write("containerd/config.toml", config)
        proc = self.spawn("containerd", ["containerd", "--config", str(path)])
        self._wait(lambda: self.containerd_socket.exists(), proc, 60, "containerd socket")
        self._wait(lambda: self.ctr("version", check=False).returncode == 0, proc, 30, "containerd answering")

    def ctr(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return _run("ctr", "--address", str(self.containerd_socket), "--namespace", "k8s.io", *args, check=check)

    def import_image(self, archive: Path) -> None:
        """Load an image tarball (docker or OCI archive) into the node's containerd, where pods find it."""
        self.ctr("images", "import", "--no-unpack", str(archive))

    def _admin(self) -> str:
        return str(self.cluster.kubeconfig)

    def _start_controllers(self) -> None:
        pki = self.cluster.pki
        common = [f"--kubeconfig={self._admin()}", "--leader-elect=false", "--v=1"]
        self.spawn(
            "kube-controller-manager",
            [
                str(node_bin() / "kube-controller-manager"),
                *common,
                f"--bind-address={self.node_ip}",
                f"--service-account-private-key-file={pki / 'sa.key'}",
                f"--root-ca-file={pki / 'ca.crt'}",
                "--use-service-account-credentials=false",
                f"--cluster-cidr={POD_CIDR}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--controllers=*",
                "--node-monitor-grace-period=40s",
            ],
        )
        self.spawn("kube-scheduler", [str(node_bin() / "kube-scheduler"), *common, f"--bind-address={self.node_ip}"])

    def _start_coredns(self) -> None:
        """CoreDNS on the node's address, behind the `kube-dns` Service (Endpoints mirrored by the real controller)."""
        corefile = f""".:53 {{
    errors
    health {self.node_ip}:8080
    ready {self.node_ip}:8181
    kubernetes cluster.local in-addr.arpa ip6.arpa {{
        kubeconfig {self._admin()} godrun-test
        pods insecure
        ttl 5
    }}
    cache 5
}}
"""
        path = self._write("coredns/Corefile", corefile)
        self.spawn("coredns", [str(node_bin() / "coredns"), "-conf", str(path), "-dns.port", "53"])
        service = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "kube-dns", "namespace": "kube-system", "labels": {"k8s-app": "kube-dns"}},
            "spec": {
                "clusterIP": DNS_IP,
                "ports": [
                    {"name": "dns", "port": 53, "protocol": "UDP"},
                    {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
                ],
            },
        }
        endpoints = {
            "apiVersion": "v1",
            "kind": "Endpoints",
            "metadata": {"name": "kube-dns", "namespace": "kube-system"},
            "subsets": [
                {
                    "addresses": [{"ip": self.node_ip}],
                    "ports": [
                        {"name": "dns", "port": 53, "protocol": "UDP"},
                        {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
                    ],
                }
            ],
        }
        docs = yaml.safe_dump_all([service, endpoints])
        self.cluster.kubectl("apply", "-f", "-", input=docs)

    def _start_kubelet(self) -> None:
        pki = self.cluster.pki
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "failCgroupV1": False,
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": self.cgroup_root,
            "cgroupsPerQOS": True,
            "enforceNodeAllocatable": ["pods"],
            "failSwapOn": False,
            "address": self.node_ip,
            "readOnlyPort": 0,
            "healthzBindAddress": self.node_ip,
            "clusterDNS": [DNS_IP],
            "clusterDomain": "cluster.local",
            "resolvConf": str(self._write("kubelet/resolv.conf", "nameserver 127.0.0.1\n")),
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": False},
                "x509": {"clientCAFile": str(pki / "ca.crt")},
            },
            "authorization": {"mode": "AlwaysAllow"},
            "containerRuntimeEndpoint": f"unix://{self.containerd_socket}",
            "podCIDR": POD_CIDR,
            "maxPods": 30,
            "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%"},
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "serializeImagePulls": False,
            "registerNode": True,
            "nodeStatusUpdateFrequency": "2s",
            "syncFrequency": "5s",
            "fileCheckFrequency": "5s",
            "volumeStatsAggPeriod": "0s",
            "localStorageCapacityIsolation": True,
            "protectKernelDefaults": False,
        }
        path = self._write("kubelet/config.yaml", config)
        self.spawn(
            "kubelet",
            [
                str(node_bin() / "kubelet"),
                f"--config={path}",
                f"--kubeconfig={self._admin()}",
                f"--root-dir={self.root / 'kubelet' / 'root'}",
                f"--cert-dir={self.root / 'kubelet' / 'pki'}",
                f"--hostname-override={self.name}",
                f"--node-ip={self.node_ip}",
                "--v=1",
            ],
        )

    def _start_kube_proxy(self) -> None:
        config = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "mode": "iptables",
            "clientConnection": {"kubeconfig": self._admin()},
            "hostnameOverride": self.name,
            "bindAddress": self.node_ip,
            "clusterCIDR": POD_CIDR,
            "metricsBindAddress": f"{self.node_ip}:10249",
            "healthzBindAddress": f"{self.node_ip}:10256",
            # a network namespace other than the first has read-only conntrack sysctls: leave them as they are
            "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
            # one bridge carries pod -> Service -> pod: masquerade so replies come back through the node
            "iptables": {"masqueradeAll": True, "syncPeriod": "10s", "minSyncPeriod": "0s"},
        }
        path = self._write("kube-proxy/config.yaml", config)
        self.spawn("kube-proxy", [str(node_bin() / "kube-proxy"), f"--config={path}", "--v=1"])

    def _wait(self, ok, proc: Process | None, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for p in self.processes:
                if p.popen.poll() is not None:
                    raise RuntimeError(f"{p.name} exited with {p.popen.returncode} waiting for {what}:\n{p.tail()}")
            if ok():
                return
            time.sleep(0.25)
        tail = proc.tail() if proc else ""
        raise TimeoutError(f"no {what} after {timeout:.0f}s:\n{tail}")

    def _node_ready(self) -> bool:
        res = self.cluster.kubectl(
            "get", "node", self.name, "-o", 'jsonpath={.status.conditions[?(@.type=="Ready")].status}', check=False
        )
        return res.stdout.strip() == "True"

    def _wait_node_ready(self, deadline: float) -> None:
        kubelet = next(p for p in self.processes if p.name == "kubelet")
        self._wait(self._node_ready, kubelet, max(deadline - time.monotonic(), 1.0), f"node {self.name} Ready")

    # -- stop ----------------------------------------------------------------------------------------------
    def stop(self) -> None:
        for proc in reversed(self.processes):  # kube-proxy, kubelet, ..., containerd
            proc.stop(grace=5.0)
        self.processes.clear()
        self.cluster.stop()
        self._kill_leftovers()
        self._unmount_all()
        _run("ip", "netns", "delete", self.netns, check=False)
        self._remove_cgroups()
        if not self._mounts():
            shutil.rmtree(self.run_dir, ignore_errors=True)
            if not self.keep_root:
                shutil.rmtree(self.root, ignore_errors=True)

    def _leftover_pids(self) -> set[int]:
        """Processes in this node's cgroups (containers) or naming its root (containerd shims)."""
        pids: set[int] = set()
        for top in self._cgroup_dirs():
            for procs in top.rglob("cgroup.procs") if top.exists() else ():
                pids |= {int(p) for p in procs.read_text().split()}
        markers = (str(self.root).encode(), str(self.run_dir).encode())
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    cmdline = (entry / "cmdline").read_bytes()
                    if any(marker in cmdline for marker in markers):
                        pids.add(int(entry.name))
                except OSError:
                    continue
        pids.discard(os.getpid())
        return pids

    def _kill_leftovers(self) -> None:
        for _ in range(20):
            pids = self._leftover_pids()
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.25)

    def _mounts(self) -> list[str]:
        points = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
        tops = (str(self.root), str(self.run_dir))
        return [p for p in points if any(p == top or p.startswith(top + "/") for top in tops)]

    def _unmount_all(self) -> None:
        for point in sorted(self._mounts(), key=len, reverse=True):
            _run("umount", "-l", point, check=False)

    def _remove_cgroups(self) -> None:
        for top in self._cgroup_dirs():
            if top.exists():
                for path in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
                    path.rmdir()
                top.rmdir()

    # -- helpers for tests ---------------------------------------------------------------------------------
    def kubectl(self, *args: str, **kw) -> subprocess.CompletedProcess[str]:
        return self.cluster.kubectl(*args, **kw)

    def api_client(self):  # -> kubernetes.client.ApiClient
        return self.cluster.api_client()


def leftovers_of(node: KubeNode) -> dict[str, object]:
    """What a stopped node left behind on this machine (all empty when stop() cleaned up)."""
    netns = _run("ip", "netns", "list", check=False).stdout
    return {
        "processes": sorted(node._leftover_pids()) if node.root.exists() else [],
        "mounts": node._mounts(),
        "netns": node.netns in netns,
        "cgroups": [str(p) for p in node._cgroup_dirs() if p.exists()],
        "root": node.root.exists() or node.run_dir.exists(),
    }
