"""Multi-node training: the run volume must be ReadWriteMany, checked before the Indexed Job is created."""

from __future__ import annotations

import copy

import pytest
from kubernetes.client.rest import ApiException
from test_controller_kube import FakeApi, run_view

from godrun.controller import jobs
from godrun.controller.kube import JobRejected, KubeExecutor
from godrun.core.machine import CreateJob
from godrun.core.names import job_name

MULTI = {"resources": {"nodes": 2, "gpus": 1}, "data": {"claimName": "runs"}}


class ClaimApi(FakeApi):
    def __init__(self, claims: dict[str, list[str]]) -> None:
        super().__init__()
        self.claims = claims
        self.services: list[dict] = []

    def read_namespaced_persistent_volume_claim(self, name, ns):
        if name not in self.claims:
            raise ApiException(status=404, reason="NotFound")
        return {"metadata": {"name": name}, "spec": {"accessModes": self.claims[name]}}

    def create_namespaced_service(self, ns, body):
        self.services.append(body)


def _create(api: ClaimApi) -> None:
    KubeExecutor(api).apply(run_view(**MULTI), [CreateJob("train", job_name("r", "train", 1), 1, ("python",))])


@pytest.mark.parametrize(
    ("claims", "needle"),
    [({"runs": ["ReadWriteOnce"]}, "needs ReadWriteMany"), ({}, "not found")],
)
def test_multi_node_refuses_a_volume_not_shared_by_the_nodes(claims: dict, needle: str) -> None:
    api = ClaimApi(claims)
    with pytest.raises(JobRejected, match=needle) as err:
        _create(api)
    assert "spec.data.claimName" in str(err.value) and not api.jobs


def test_multi_node_starts_on_a_read_write_many_volume() -> None:
    api = ClaimApi({"runs": ["ReadWriteMany"]})
    _create(api)
    (job,) = api.jobs.values()
    assert job["spec"]["completionMode"] == "Indexed" and job["spec"]["backoffLimit"] == 0
    assert len(api.services) == 1


def test_single_node_needs_no_shared_volume() -> None:
    assert jobs.shared_volume_problem(run_view(data={"claimName": "x"}).spec, None) is None


def test_a_refused_run_has_terminal_conditions() -> None:
    """Runs put in Error outside the state machine (Job refused, invalid spec) still say Failed=True."""
    from test_controller_kube import controller, godrun_obj

    api = ClaimApi({"runs": ["ReadWriteOnce"]})
    obj = godrun_obj()
    obj["spec"] = {"image": "i", **MULTI}
    api.godruns["r"] = obj
    c = controller(api)
    c.handle("godruns", "ADDED", copy.deepcopy(obj))
    assert c.reconcile_key(("lab", "r")) is None
    st = api.status_puts[-1]["status"]
    assert (st["phase"], st["reason"]) == ("Error", "JobRejected") and "ReadWriteMany" in st["message"]
    conds = {cd["type"]: (cd["status"], cd["reason"]) for cd in st["conditions"]}
    assert conds["Failed"] == ("True", "JobRejected") and conds["Succeeded"] == ("False", "JobRejected")
    assert "Unknown" not in {s for s, _ in conds.values()}

    bad = godrun_obj("bad")
    bad["spec"] = {"image": "i", "resources": {"cpu": "1.2.3"}}
    api.godruns["bad"] = bad
    c.handle("godruns", "ADDED", copy.deepcopy(bad))
    c.reconcile_key(("lab", "bad"))
    st = api.status_puts[-1]["status"]
    assert st["reason"] == "InvalidSpec"
    assert {cd["type"]: cd["status"] for cd in st["conditions"]} == {"Succeeded": "False", "Failed": "True"}
