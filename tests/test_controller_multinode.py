"""Multi-node training: the run volume must be ReadWriteMany, checked before the Indexed Job is created; a run
put in Error this way (or by an invalid spec) still gets its terminal conditions; bad input on any rank is
never retried."""

from __future__ import annotations

import copy
from datetime import UTC, datetime

import pytest
from kubernetes.client.rest import ApiException
from test_controller_kube import FakeApi, controller, godrun_obj, run_view

from godrun.controller import jobs
from godrun.controller.kube import KubeExecutor
from godrun.controller.observe import job_stage_obs
from godrun.core.machine import CreateJob, GodRunView, Observed, decide
from godrun.core.names import job_name, service_name
from godrun.spec import GodRunSpec

MULTI = {"resources": {"nodes": 2, "gpus": 1}, "data": {"claimName": "runs"}}


class ClaimApi(FakeApi):
    def __init__(self, claims: dict[str, list[str]]) -> None:
        super().__init__()
        self.claims = claims
        self.services: list[dict] = []
        self.deleted_services: list[str] = []

    def read_namespaced_persistent_volume_claim(self, name, ns):
        if name not in self.claims:
            raise ApiException(status=404, reason="NotFound")
        return {"metadata": {"name": name}, "spec": {"accessModes": self.claims[name]}}

    def create_namespaced_service(self, ns, body):
        self.services.append(body)

    def delete_namespaced_service(self, name, ns):
        self.deleted_services.append(name)


def _reconcile(api: ClaimApi, name: str, spec: dict) -> dict:
    obj = godrun_obj(name)
    obj["spec"] = {"image": "i", **spec}
    api.godruns[name] = obj
    c = controller(api)
    c.handle("godruns", "ADDED", copy.deepcopy(obj))
    c.reconcile_key(("lab", name))
    return api.status_puts[-1]["status"]


@pytest.mark.parametrize(
    ("claims", "needle"),
    [({"runs": ["ReadWriteOnce"]}, "needs ReadWriteMany"), ({}, "not found")],
)
def test_multi_node_refuses_a_volume_not_shared_by_the_nodes(claims: dict, needle: str) -> None:
    api = ClaimApi(claims)
    st = _reconcile(api, "r", MULTI)
    assert (st["phase"], st["reason"]) == ("Error", "JobRejected")
    assert needle in st["message"] and "spec.data.claimName" in st["message"] and not api.jobs
    conds = {cd["type"]: (cd["status"], cd["reason"]) for cd in st["conditions"]}
    assert conds["Failed"] == ("True", "JobRejected") and conds["Succeeded"] == ("False", "JobRejected")
    assert "Unknown" not in {s for s, _ in conds.values()}


def test_multi_node_starts_on_a_read_write_many_volume() -> None:
    api = ClaimApi({"runs": ["ReadWriteMany"]})
    st = _reconcile(api, "r", MULTI)
    assert st["phase"] == "Training"
    (job,) = api.jobs.values()
    assert job["spec"]["completionMode"] == "Indexed" and job["spec"]["backoffLimit"] == 0
    assert len(api.services) == 1


def test_single_node_needs_no_shared_volume() -> None:
    assert jobs.shared_volume_problem(run_view(data={"claimName": "x"}).spec, None) is None


def test_an_invalid_spec_has_terminal_conditions() -> None:
    st = _reconcile(ClaimApi({}), "bad", {"resources": {"cpu": "1.2.3"}})
    assert st["reason"] == "InvalidSpec"
    conds = {cd["type"]: cd["status"] for cd in st["conditions"]}
    assert conds["Succeeded"] == "False" and conds["Failed"] == "True" and "Unknown" not in conds.values()


def _rank(index: int, exit_code: int, message: str, finished: str) -> dict:
    term = {"exitCode": exit_code, "message": message, "finishedAt": finished}
    return {
        "metadata": {"name": f"t-{index}", "annotations": {jobs.COMPLETION_INDEX_ANNOTATION: str(index)}},
        "status": {"phase": "Failed", "containerStatuses": [{"name": "trainer", "state": {"terminated": term}}]},
    }


@pytest.mark.parametrize("with_pods", [True, False], ids=["pods", "pods-gone"])
def test_bad_input_on_rank_1_is_never_retried_whichever_rank_ends_last(with_pods: bool) -> None:
    """Rank 1 exits 2, the Job fails by its pod failure policy, rank 0 is then killed (143, the newest)."""
    msg = "Container trainer for pod lab/t-1 failed with exit code 2 matching FailJob rule at index 0"
    failed = {"type": "Failed", "status": "True", "reason": "PodFailurePolicy", "message": msg}
    job = {"metadata": {"name": "t"}, "spec": {}, "status": {"conditions": [failed], "failed": 2}}
    pods = [_rank(1, 2, "manifest_train.csv: row 7", "2025-01-01T00:00:00Z"), _rank(0, 143, "", "2025-01-01T00:00:05Z")]
    obs = job_stage_obs(job, pods if with_pods else [])
    assert (obs.state, obs.exit_code) == ("failed", 2)
    assert ("row 7" in obs.message) is with_pods
    s = GodRunSpec.model_validate({"image": "x", "resources": {"nodes": 2}, "data": {"claimName": "shared"}})
    run = GodRunView("t", "lab", 1, s)
    d = decide(run, Observed(train=obs), datetime(2025, 1, 1, tzinfo=UTC))
    assert (d.status.phase, d.status.reason, d.status.restarts) == ("Error", "BadInput", 0)
    assert not [a for a in d.actions if isinstance(a, CreateJob)]


def test_a_recreated_multi_node_job_removes_the_services_of_the_failed_attempts() -> None:
    api = ClaimApi({"runs": ["ReadWriteMany"]})
    ex = KubeExecutor(api, progress="off")
    view = run_view(**MULTI)
    third = job_name("r", "train", 1, 2)
    assert ex.apply(view, [CreateJob("train", third, 1, ("python", "-m", "godrun.trainer"))])
    assert api.deleted_services == [service_name(job_name("r", "train", 1, k)) for k in (0, 1)]
    assert [s["metadata"]["name"] for s in api.services] == [service_name(third)]
