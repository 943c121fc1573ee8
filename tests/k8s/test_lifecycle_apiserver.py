"""The lifecycle against the real API server (no node): the controller's own code, reconciling from what it
lists, with the API server's admission, CEL and Pod Security checks.

- a Shipped run whose image is edited later gets no new Job and keeps its verdict (a verdict is final);
- a pod that cannot pull its image (its status as a kubelet writes it) makes the run Pending with a Stalled
  condition naming the pod's reason, not Training;
- what the CRD can say is refused at admission: the controller's label keys, env names, volume names;
- `jobs.runAsUser: null` is admitted, and its pods pass Pod Security `restricted` (OpenShift's
  restricted-v2 then assigns the UID).
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from godrun.controller.kube import KubeApi, KubeExecutor
from godrun.controller.loop import Controller, LoopConfig
from godrun.controller.observe import view_from_object
from godrun.core.machine import CreateJob
from godrun.core.names import job_name
from godrun.core.prometheus import ControllerMetrics
from godrun.testcluster import Cluster
from k8s.test_crd_validation import create, example, godruns  # noqa: F401  (godruns: module fixture)

GROUP, VERSION, PLURAL = "godrun.io", "v1alpha1", "godruns"


def _controller(cluster: Cluster, ns: str) -> Controller:
    api = KubeApi.from_client(cluster.api_client())
    return Controller(api, KubeExecutor(api, progress="off"), ControllerMetrics(), LoopConfig(namespace=ns))


def _reconcile(c: Controller, ns: str, name: str) -> dict[str, Any]:
    """List what the watches would hold, reconcile once, return the GodRun as the API server has it."""
    for kind, list_fn in (("godruns", c._list_godruns), ("jobs", c._list_jobs), ("pods", c._list_pods)):
        c.relist(kind, c.api.raw(list_fn)["items"])
    c.reconcile_key((ns, name))
    return c.api.custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)


def _train_jobs(c: Controller, ns: str) -> list[str]:
    return sorted(j["metadata"]["name"] for j in c.api.raw(c.api.batch.list_namespaced_job, ns)["items"])


def _write_status(godruns, ns: str, name: str, status: dict[str, Any]) -> None:  # noqa: F811
    obj = godruns.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
    obj["status"] = status
    godruns.replace_namespaced_custom_object_status(GROUP, VERSION, ns, PLURAL, name, obj)


def test_an_edited_shipped_run_starts_no_job_and_keeps_its_verdict(
    godruns,  # noqa: F811
    k8s_cluster: Cluster,
    k8s_namespace: str,
) -> None:
    ns, name = k8s_namespace, "shipped"
    create(godruns, example(ns, name))
    c = _controller(k8s_cluster, ns)
    first = _reconcile(c, ns, name)
    assert first["status"]["phase"] == "Training" and _train_jobs(c, ns) == [job_name(name, "train", 1)]
    shipped = copy.deepcopy(first["status"])  # as the controller ends it once the gates passed
    shipped |= {"phase": "Shipped", "reason": "GatesPassed", "message": "all four gates passed"}
    shipped["panel"] = {"verdict": "pass", "psnrMean": 22.0}
    for cond in shipped["conditions"]:
        cond |= {"status": "True", "reason": "Done"}
    shipped["conditions"] = [cd for cd in shipped["conditions"] if cd["type"] != "Failed"]
    _write_status(godruns, ns, name, shipped)
    for edit in ({"image": "reg/godrun:next"}, {"jobs": {"ttlSecondsAfterFinished": 60}}, {"suspend": True}):
        godruns.patch_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name, {"spec": edit})
        after = _reconcile(c, ns, name)
        gen = after["metadata"]["generation"]
        assert (after["status"]["phase"], after["status"]["panel"]["verdict"]) == ("Shipped", "pass"), edit
        assert after["status"]["observedGeneration"] == gen > 1
        assert {cd["status"] for cd in after["status"]["conditions"]} == {"True"}, "no condition reset"
        assert _train_jobs(c, ns) == [job_name(name, "train", 1)], f"{edit} started a Job"


def test_a_pod_that_cannot_pull_its_image_is_pending_and_stalled_not_training(
    godruns,  # noqa: F811
    k8s_cluster: Cluster,
    k8s_namespace: str,
) -> None:
    ns, name = k8s_namespace, "stalled"
    create(godruns, example(ns, name))
    c = _controller(k8s_cluster, ns)
    _reconcile(c, ns, name)
    train = job_name(name, "train", 1)
    job = c.api.raw(c.api.batch.read_namespaced_job, train, ns)
    core = client.CoreV1Api(k8s_cluster.api_client())
    pod = {  # the Job's pod, as the Job controller would create it from the template
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{train}-x7k2p",
            "labels": job["spec"]["template"]["metadata"]["labels"] | {"batch.kubernetes.io/job-name": train},
        },
        "spec": job["spec"]["template"]["spec"],
    }
    core.create_namespaced_pod(ns, pod)
    waiting = {"reason": "ImagePullBackOff", "message": 'Back-off pulling image "reg/godrun:missing"'}
    status = {
        "phase": "Pending",
        "conditions": [{"type": "PodScheduled", "status": "True"}],
        "containerStatuses": [
            {"name": "trainer", "image": "reg/godrun:missing", "imageID": "", "ready": False, "restartCount": 0}
            | {"state": {"waiting": waiting}}
        ],
    }
    core.patch_namespaced_pod_status(pod["metadata"]["name"], ns, {"status": status})
    st = _reconcile(c, ns, name)["status"]
    assert (st["phase"], st["reason"]) == ("Pending", "ImagePullBackOff"), st
    stalled = next(cd for cd in st["conditions"] if cd["type"] == "Stalled")
    assert stalled["status"] == "True" and "Back-off pulling image" in stalled["message"]


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"podOverrides": {"labels": {"app.kubernetes.io/name": "mine"}}}, "are set by the controller"),
        ({"jobs": {"labels": {"godrun.io/run": "other"}}}, "are set by the controller"),
        ({"podOverrides": {"env": [{"name": "GODRUN_TERMINATION_LOG", "value": "/x"}]}}, "GODRUN_"),
        ({"podOverrides": {"volumes": [{"name": "data", "emptyDir": {}}]}}, "data, dshm and tmp"),
        ({"podOverrides": {"labels": {"team": "not a value"}}}, "spec.podOverrides.labels.team"),
        ({"podOverrides": {"annotations": {"has space": "x"}}}, "must be Kubernetes label keys"),
        ({"jobs": {"labels": {"-bad-": "x"}}}, "must be Kubernetes label keys"),
    ],
)
def test_what_pydantic_refuses_in_overrides_is_refused_at_admission(
    godruns,  # noqa: F811
    k8s_namespace: str,
    patch: dict,
    message: str,
) -> None:
    obj = example(k8s_namespace, "override")
    for key, value in patch.items():
        obj["spec"].setdefault(key, {}).update(value)
    with pytest.raises(ApiException) as err:
        create(godruns, obj)
    assert err.value.status == 422 and message in err.value.body, err.value.body
    allowed = example(k8s_namespace, "priority")  # Kueue's priority label is the one reserved key allowed
    allowed["spec"]["jobs"] = {"labels": {"kueue.x-k8s.io/priority-class": "low"}}
    create(godruns, allowed)


def test_run_as_user_null_is_admitted_and_its_pods_pass_restricted(
    godruns,  # noqa: F811
    k8s_cluster: Cluster,
    k8s_namespace: str,
) -> None:
    ns = k8s_namespace
    core = client.CoreV1Api(k8s_cluster.api_client())
    core.patch_namespace(ns, {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted"}}})
    obj = example(ns, "openshift")
    obj["spec"]["jobs"] = {"runAsUser": None}
    created = create(godruns, obj)
    assert created["spec"]["jobs"].get("runAsUser") is None
    run, error = view_from_object(created)
    assert error is None and run.spec.jobs.run_as_user is None
    c = _controller(k8s_cluster, ns)
    c.executor.apply(run, [CreateJob("train", job_name(run.name, "train", 1), 1, ("python", "-m", "x"))])
    job = c.api.raw(c.api.batch.read_namespaced_job, job_name(run.name, "train", 1), ns)
    template = job["spec"]["template"]["spec"]
    assert "runAsUser" not in template["securityContext"]
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "restricted-pod"}, "spec": template}
    core.create_namespaced_pod(ns, pod)  # Pod Security admission (enforce: restricted) lets it in


def test_queue_name_stays_editable_the_rest_of_resources_does_not(
    godruns,  # noqa: F811
    k8s_namespace: str,
) -> None:
    """Kueue lets a Job that is not admitted move to another LocalQueue: so may the GodRun."""
    obj = example(k8s_namespace, "queued")
    obj["spec"]["resources"]["queueName"] = "gpu-low"
    create(godruns, obj)
    patch = {"spec": {"resources": {"queueName": "gpu-high"}}}
    out = godruns.patch_namespaced_custom_object(GROUP, VERSION, k8s_namespace, PLURAL, "queued", patch)
    assert out["spec"]["resources"]["queueName"] == "gpu-high"
    with pytest.raises(ApiException) as err:
        patch = {"spec": {"resources": {"gpus": 7}}}
        godruns.patch_namespaced_custom_object(GROUP, VERSION, k8s_namespace, PLURAL, "queued", patch)
    assert err.value.status == 422 and "spec.resources is immutable" in err.value.body
