"""Node stand-in: plays the Job controller and the kubelet for Jobs in the test cluster.

Only tests/k8s/test_prometheus_e2e.py still runs on it, until the real node's Prometheus test
(tests/k8s/test_node_prometheus.py) replaces it; every other GodRun test runs on the real node
(tests/k8s/kubenode.py: real kubelet, Job controller, containerd; `readme_cluster` fixture, `node` marker).
Nothing new belongs here.

For each Job it creates the Pod the Job controller would (generateName `<job>-`, the
controller-uid/job-name labels, a controller ownerReference), runs the container's
command + args as a local process with this repository's Python environment, and writes
Pod and Job status through the status subresources in the order the real controllers do
(Job: SuccessCriteriaMet before Complete, FailureTarget before Failed; the apiserver
rejects anything else). podFailurePolicy (FailJob / Ignore / Count on exit codes and pod
conditions), backoffLimit and activeDeadlineSeconds are honoured.

Deliberate simplifications: one container per pod, restartPolicy Never (OnFailure is run
as Never), no pod finalizers, no uncountedTerminatedPods bookkeeping, non-indexed Jobs only,
retry delay `retry_delay` instead of the 10 s exponential back-off.

Volumes: a PersistentVolumeClaim maps to `<root>/volumes/<namespace>/<claim>` (or
`volume_dirs[claim]`) and persists across pods; hostPath maps to `<root>/hostpath/...`;
everything else to a per-pod folder. Mount paths in args, env values and workingDir are
rewritten to those folders, and so are the prefixes in `path_map` (image paths -> host).
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import logging
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("godrun.tests.node")

NODE_NAME = "godrun-node-standin"
TERMINATION_ENV = "GODRUN_TERMINATION_LOG"
MERGE = "application/merge-patch+json"
REPO_ROOT = Path(__file__).resolve().parents[2]
MAX_MESSAGE = 4096  # the kubelet's cap on a termination message


def now_rfc3339() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def exit_code_of(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


@dataclass
class PodRun:
    namespace: str
    name: str
    job_uid: str
    attempt: int
    container: dict
    directory: Path
    started: str
    popen: subprocess.Popen | None = None
    conditions: list[dict] = field(default_factory=list)
    killed_for: str = ""  # "deadline" | "job gone" | "job failed"
    done: bool = False

    @property
    def termination_log(self) -> Path:
        return self.directory / "termination-log"

    @property
    def output(self) -> Path:
        return self.directory / "output.log"


@dataclass
class JobState:
    namespace: str
    name: str
    uid: str
    job: dict
    conditions: list[dict] = field(default_factory=list)
    start_time: str | None = None
    succeeded: int = 0
    failed: int = 0
    attempts: int = 0
    pods: list[PodRun] = field(default_factory=list)
    not_before: float = 0.0
    finished: bool = False

    @property
    def active(self) -> list[PodRun]:
        return [p for p in self.pods if not p.done]


class NodeStandIn:
    """Run with `with NodeStandIn(api_client, namespace, root) as node:`; namespace None watches all."""

    def __init__(
        self,
        api_client,
        namespace: str | None,
        root: Path,
        *,
        python: str | None = None,
        retry_delay: float = 0.5,
        poll: float = 0.1,
        volume_dirs: dict[str, Path] | None = None,
        path_map: dict[str, Path] | None = None,
        extra_env: dict[str, str] | None = None,
        events: bool = True,
    ) -> None:
        from kubernetes import client

        self.api_client, self.namespace, self.root = api_client, namespace, Path(root)
        self.batch, self.core = client.BatchV1Api(api_client), client.CoreV1Api(api_client)
        venv_bin = REPO_ROOT / ".venv" / "bin"
        self.python = python or (str(venv_bin / "python") if (venv_bin / "python").exists() else sys.executable)
        self.godrun = str(venv_bin / "godrun")
        self.retry_delay, self.poll, self.events = retry_delay, poll, events
        self.volume_dirs = dict(volume_dirs or {})
        self.path_map = dict(path_map or {})
        self.extra_env = dict(extra_env or {})
        self.jobs: dict[str, JobState] = {}
        self.errors: list[str] = []
        self._queue: queue.Queue[tuple[str, dict]] = queue.Queue()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    # -- public API ----------------------------------------------------------------------------------
    def __enter__(self) -> NodeStandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> NodeStandIn:
        self.root.mkdir(parents=True, exist_ok=True)
        for target in (self._watch_loop, self._work_loop):
            thread = threading.Thread(target=target, daemon=True, name=f"node-standin-{target.__name__}")
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stop.set()
        watcher, worker = self._threads or (None, None)
        if worker:
            worker.join(10)
            watcher.join(0.5)  # a daemon thread blocked in its watch; it ends with its stream
        for state in self.jobs.values():
            for pod in state.active:
                self._kill(pod, grace=1.0)

    def volume_dir(self, namespace: str, claim: str) -> Path:
        path = self.volume_dirs.get(claim) or self.root / "volumes" / namespace / claim
        path.mkdir(parents=True, exist_ok=True)
        return path

    # -- threads -------------------------------------------------------------------------------------
    def _watch_loop(self) -> None:
        from kubernetes import watch

        while not self._stop.is_set():
            if self.namespace:
                list_fn, args = self.batch.list_namespaced_job, (self.namespace,)
            else:
                list_fn, args = self.batch.list_job_for_all_namespaces, ()
            try:
                for event in watch.Watch().stream(list_fn, *args, timeout_seconds=10):
                    obj = self.api_client.sanitize_for_serialization(event["object"])
                    self._queue.put((event["type"], obj))
                    if self._stop.is_set():
                        break
            except Exception as err:  # the watch reconnects; errors are kept for the test to see
                if not self._stop.is_set():
                    log.warning("job watch: %s", err)
                    time.sleep(0.5)

    def _work_loop(self) -> None:
        while not self._stop.is_set():
            try:
                kind, job = self._queue.get(timeout=self.poll)
                self._guard(self._on_job_event, kind, job)
            except queue.Empty:
                pass
            with self._lock:
                states = list(self.jobs.values())
            for state in states:
                self._guard(self._tick, state)

    def _guard(self, fn: Callable, *args: object) -> None:
        try:
            fn(*args)
        except Exception as err:
            log.exception("node stand-in")
            self.errors.append(f"{fn.__name__}: {err}")

    # -- Job controller ------------------------------------------------------------------------------
    def _on_job_event(self, kind: str, job: dict) -> None:
        meta = job["metadata"]
        state = self.jobs.get(meta["uid"])
        if kind == "DELETED" or meta.get("deletionTimestamp"):
            if state:
                for pod in state.active:
                    self._kill(pod, grace=1.0, why="job gone")
                state.finished = True
            return
        if state is None:
            status = job.get("status") or {}
            state = JobState(meta["namespace"], meta["name"], meta["uid"], job)
            state.conditions = list(status.get("conditions") or [])
            state.start_time = status.get("startTime")
            state.succeeded, state.failed = status.get("succeeded", 0), status.get("failed", 0)
            state.finished = any(c["type"] in ("Complete", "Failed") for c in state.conditions)
            with self._lock:
                self.jobs[meta["uid"]] = state
        state.job = job

    def _tick(self, state: JobState) -> None:
        if state.finished:
            return
        for pod in state.active:
            self._tick_pod(state, pod)
        if state.finished or (state.job["spec"].get("suspend") and not state.active):
            return
        deadline = state.job["spec"].get("activeDeadlineSeconds")
        if deadline and state.start_time and _age(state.start_time) >= deadline:
            for pod in state.active:
                self._kill(pod, grace=1.0, why="deadline")
                self._pod_finished(state, pod, count_failed=True)
            self._finish(state, "FailureTarget", "DeadlineExceeded", "Job was active longer than specified deadline")
            return
        spec = state.job["spec"]
        completions, parallelism = spec.get("completions", 1), spec.get("parallelism", 1)
        want = min(parallelism, completions - state.succeeded) - len(state.active)
        if want > 0 and time.monotonic() >= state.not_before:
            for _ in range(want):
                self._start_pod(state)
            self._write_job_status(state)

    def _write_job_status(self, state: JobState, **extra: object) -> None:
        active = len(state.active)
        status = {
            "active": active,
            "ready": active,
            "terminating": 0,
            "succeeded": state.succeeded,
            "failed": state.failed,
            "startTime": state.start_time,
            "conditions": state.conditions,
            "uncountedTerminatedPods": {},
            **extra,
        }
        self.batch.patch_namespaced_job_status(state.name, state.namespace, {"status": status}, _content_type=MERGE)

    def _condition(self, ctype: str, reason: str, message: str) -> dict:
        t = now_rfc3339()
        return {
            "type": ctype,
            "status": "True",
            "reason": reason,
            "message": message,
            "lastProbeTime": t,
            "lastTransitionTime": t,
        }

    def _finish(self, state: JobState, interim: str, reason: str, message: str) -> None:
        """Two writes, as the Job controller does: the interim condition, then the terminal one."""
        state.conditions.append(self._condition(interim, reason, message))
        self._write_job_status(state)
        final = self._condition("Complete" if interim == "SuccessCriteriaMet" else "Failed", reason, message)
        state.conditions.append(final)
        extra = {"completionTime": final["lastTransitionTime"]} if final["type"] == "Complete" else {}
        self._write_job_status(state, **extra)
        state.finished = True
        ok = final["type"] == "Complete"
        self._event(
            state, "Normal" if ok else "Warning", "Completed" if ok else reason, "Job completed" if ok else message
        )

    def _after_pod(self, state: JobState, pod: PodRun, exit_code: int) -> None:
        spec = state.job["spec"]
        if exit_code == 0:
            state.succeeded += 1
        else:
            action, message = self._failure_policy(state, pod, exit_code)
            if action == "FailJob":
                state.failed += 1
                for other in state.active:
                    self._kill(other, grace=1.0, why="job failed")
                    self._pod_finished(state, other, count_failed=True)
                self._finish(state, "FailureTarget", "PodFailurePolicy", message)
                return
            if action != "Ignore":
                state.failed += 1
            state.not_before = time.monotonic() + self.retry_delay
        if state.failed > spec.get("backoffLimit", 6):
            self._finish(state, "FailureTarget", "BackoffLimitExceeded", "Job has reached the specified backoff limit")
        elif state.succeeded >= spec.get("completions", 1):
            self._finish(state, "SuccessCriteriaMet", "CompletionsReached", "Reached expected number of succeeded pods")
        else:
            self._write_job_status(state)

    def _failure_policy(self, state: JobState, pod: PodRun, exit_code: int) -> tuple[str, str]:
        """First matching podFailurePolicy rule: (action, FailJob message); ("Count", "") when none matches."""
        rules = (state.job["spec"].get("podFailurePolicy") or {}).get("rules", [])
        where = f"{pod.namespace}/{pod.name}"
        for i, rule in enumerate(rules):
            codes = rule.get("onExitCodes")
            if codes and codes.get("containerName") in (None, pod.container["name"]):
                listed = exit_code in codes.get("values", [])
                if listed == (codes.get("operator") == "In"):
                    return rule["action"], (
                        f"Container {pod.container['name']} for pod {where} failed with exit "
                        f"code {exit_code} matching {rule['action']} rule at index {i}"
                    )
            for pattern in rule.get("onPodConditions") or []:
                for cond in pod.conditions:
                    if cond["type"] == pattern["type"] and cond["status"] == pattern.get("status", "True"):
                        return rule[
                            "action"
                        ], f"Pod {where} has condition {cond['type']} matching {rule['action']} rule at index {i}"
        return "Count", ""

    def _event(self, state: JobState, etype: str, reason: str, message: str) -> None:
        if not self.events:
            return
        from kubernetes import client

        t = now_rfc3339()
        body = client.CoreV1Event.from_dict(
            {
                "metadata": {"generateName": f"{state.name}."},
                "involvedObject": {
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "name": state.name,
                    "namespace": state.namespace,
                    "uid": state.uid,
                },
                "reason": reason,
                "message": message,
                "type": etype,
                "count": 1,
                "firstTimestamp": t,
                "lastTimestamp": t,
                "source": {"component": "job-controller"},
            }
        )
        with contextlib.suppress(Exception):
            self.core.create_namespaced_event(state.namespace, body)

    # -- kubelet -------------------------------------------------------------------------------------
    def _start_pod(self, state: JobState) -> None:
        from kubernetes import client

        template = copy.deepcopy(state.job["spec"]["template"])
        meta = template.get("metadata") or {}
        labels = dict(meta.get("labels") or {})
        for key in ("batch.kubernetes.io/controller-uid", "controller-uid"):
            labels.setdefault(key, state.uid)
        for key in ("batch.kubernetes.io/job-name", "job-name"):
            labels.setdefault(key, state.name)
        owner = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "name": state.name,
            "uid": state.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }
        spec = {**template["spec"], "nodeName": NODE_NAME}
        body = {
            "metadata": {
                "generateName": f"{state.name}-",
                "namespace": state.namespace,
                "labels": labels,
                "annotations": meta.get("annotations") or {},
                "ownerReferences": [owner],
            },
            "spec": spec,
        }
        created = self.core.create_namespaced_pod(state.namespace, client.V1Pod.from_dict(body))
        pod_name = created.metadata.name
        self._event(state, "Normal", "SuccessfulCreate", f"Created pod: {pod_name}")
        if state.start_time is None:
            state.start_time = now_rfc3339()
        attempt, state.attempts = state.attempts, state.attempts + 1
        directory = self.root / "pods" / state.namespace / pod_name
        directory.mkdir(parents=True, exist_ok=True)
        pod = PodRun(state.namespace, pod_name, state.uid, attempt, spec["containers"][0], directory, now_rfc3339())
        state.pods.append(pod)
        pod.popen = self._launch(pod, spec)
        self._write_pod_running(pod)

    def _launch(self, pod: PodRun, spec: dict) -> subprocess.Popen:
        mounts = self._mounts(pod, spec)
        container = pod.container
        argv = [self._translate(a, mounts) for a in (container.get("command") or []) + (container.get("args") or [])]
        if not argv:
            raise ValueError(f"pod {pod.name}: container {container['name']} has no command (images are not run)")
        argv[0] = self._executable(argv[0])
        workdir = Path(self._translate(container["workingDir"], mounts)) if container.get("workingDir") else None
        if workdir is None:
            workdir = next(iter(mounts.values()), pod.directory)
        workdir.mkdir(parents=True, exist_ok=True)
        env = self._env(pod, mounts)
        with pod.output.open("wb") as out:
            return subprocess.Popen(
                argv,
                cwd=workdir,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def _executable(self, arg0: str) -> str:
        name = Path(arg0).name
        if name in ("python", "python3") or name.startswith("python3."):
            return self.python
        if name == "godrun" and Path(self.godrun).exists():
            return self.godrun
        return arg0

    def _mounts(self, pod: PodRun, spec: dict) -> dict[str, Path]:
        """mountPath -> host folder, longest path first."""
        volumes = {v["name"]: v for v in spec.get("volumes") or []}
        result: dict[str, Path] = {}
        for mount in pod.container.get("volumeMounts") or []:
            volume = volumes.get(mount["name"], {})
            if "persistentVolumeClaim" in volume:
                base = self.volume_dir(pod.namespace, volume["persistentVolumeClaim"]["claimName"])
            elif "hostPath" in volume:
                base = self.root / "hostpath" / volume["hostPath"]["path"].strip("/")
            else:
                base = pod.directory / "volumes" / mount["name"]
            path = base / mount["subPath"] if mount.get("subPath") else base
            path.mkdir(parents=True, exist_ok=True)
            result[mount["mountPath"].rstrip("/") or "/"] = path
        return dict(sorted(result.items(), key=lambda kv: -len(kv[0])))

    def _translate(self, value: str, mounts: dict[str, Path]) -> str:
        """Rewrite a leading container path (or one after '=') to its host folder."""
        table = {**{k: v for k, v in self.path_map.items()}, **mounts}
        head, sep, tail = value.partition("=") if value.startswith("--") and "=" in value else ("", "", value)
        for prefix in sorted(table, key=len, reverse=True):
            if tail == prefix or tail.startswith(prefix.rstrip("/") + "/"):
                tail = str(table[prefix]) + tail[len(prefix) :]
                break
        return head + sep + tail

    def _env(self, pod: PodRun, mounts: dict[str, Path]) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "PYTEST_CURRENT_TEST")}
        env["PATH"] = f"{Path(self.python).parent}{os.pathsep}{env.get('PATH', '')}"
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        env.update(self.extra_env)
        fields = {
            "metadata.name": pod.name,
            "metadata.namespace": pod.namespace,
            "spec.nodeName": NODE_NAME,
            "status.podIP": "127.0.0.1",
            "status.hostIP": "127.0.0.1",
        }
        for var in pod.container.get("env") or []:
            if "value" in var:
                env[var["name"]] = self._translate(var["value"], mounts)
            elif (ref := (var.get("valueFrom") or {}).get("fieldRef")) and ref.get("fieldPath") in fields:
                env[var["name"]] = fields[ref["fieldPath"]]
        env[TERMINATION_ENV] = str(pod.termination_log)
        return env

    def _container_status(self, pod: PodRun, state: dict, ready: bool) -> dict:
        c = pod.container
        return {
            "name": c["name"],
            "image": c.get("image", ""),
            "imageID": "",
            "ready": ready,
            "started": ready,
            "restartCount": 0,
            "state": state,
        }

    def _patch_pod(self, pod: PodRun, status: dict) -> None:
        self.core.patch_namespaced_pod_status(pod.name, pod.namespace, {"status": status}, _content_type=MERGE)

    def _write_pod_running(self, pod: PodRun) -> None:
        t = now_rfc3339()
        pod.conditions = [
            {"type": ctype, "status": "True", "lastTransitionTime": t}
            for ctype in ("PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled")
        ]
        ips = [{"ip": "127.0.0.1"}]
        self._patch_pod(
            pod,
            {
                "phase": "Running",
                "startTime": pod.started,
                "hostIP": "127.0.0.1",
                "hostIPs": ips,
                "podIP": "127.0.0.1",
                "podIPs": ips,
                "conditions": pod.conditions,
                "containerStatuses": [self._container_status(pod, {"running": {"startedAt": t}}, True)],
            },
        )

    def _tick_pod(self, state: JobState, pod: PodRun) -> None:
        if pod.done:
            return
        if pod.popen is not None and pod.popen.poll() is not None:
            code = self._pod_finished(state, pod)
            self._after_pod(state, pod, code)

    def _kill(self, pod: PodRun, grace: float, why: str = "") -> None:
        pod.killed_for = pod.killed_for or why
        if pod.popen is None or pod.popen.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pod.popen.pid, signal.SIGTERM)
        try:
            pod.popen.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pod.popen.pid, signal.SIGKILL)
            pod.popen.wait(5)

    def _termination_message(self, pod: PodRun, exit_code: int) -> str:
        try:
            message = pod.termination_log.read_bytes()[:MAX_MESSAGE].decode(errors="replace")
        except OSError:
            message = ""
        if not message and exit_code and pod.container.get("terminationMessagePolicy") == "FallbackToLogsOnError":
            lines = pod.output.read_bytes()[-2048:].decode(errors="replace").splitlines()[-80:]
            message = "\n".join(lines)
        return message

    def _pod_finished(self, state: JobState, pod: PodRun, count_failed: bool = False) -> int:
        """Write the terminal Pod status; returns the container's exit code."""
        code = exit_code_of(pod.popen.returncode) if pod.popen else 137
        pod.done = True
        if count_failed:
            state.failed += 1
        t = now_rfc3339()
        terminated = {
            "exitCode": code,
            "reason": "Completed" if code == 0 else "Error",
            "startedAt": pod.started,
            "finishedAt": t,
        }
        if message := self._termination_message(pod, code):
            terminated["message"] = message
        for cond in pod.conditions:
            if cond["type"] in ("Ready", "ContainersReady"):
                cond.update(status="False", reason="PodCompleted", lastTransitionTime=t)
        self._patch_pod(
            pod,
            {
                "phase": "Succeeded" if code == 0 else "Failed",
                "conditions": pod.conditions,
                "containerStatuses": [self._container_status(pod, {"terminated": terminated}, False)],
            },
        )
        return code

    def cleanup(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def _age(rfc3339: str) -> float:
    started = dt.datetime.strptime(rfc3339, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    return (dt.datetime.now(dt.UTC) - started).total_seconds()
