"""A GodRun named `<name>-actb` that this run did not create (no owner reference to this run's uid) is never
taken for the run's Act B child: decide() reports it (status message + one Warning Event) and creates nothing;
once it is gone, the run creates its own child."""

from __future__ import annotations

from dataclasses import replace

from test_controller_machine import FakeCluster, Runner, _to_verdict, spec, verdict

from godrun.controller.observe import foreign_act_b
from godrun.core.machine import CreateActB, EmitEvent, GodRunView, Observed


class _Cluster(FakeCluster):
    """The fake cluster with a GodRun `<name>-actb` someone else made (`why`), until `why` is cleared."""

    why = "it has no owner reference"

    def observe(self, run: GodRunView) -> Observed:
        obs = super().observe(run)
        return replace(obs, act_b_exists=False, act_b_foreign=self.why) if self.why else obs


def test_decide_reports_a_foreign_act_b_child_and_never_adopts_it():
    r = Runner(spec(fallback={"launchActB": True}))
    r.cluster = _Cluster()
    d = _to_verdict(r, verdict(False))
    assert d.status.phase == "Failed-ActB"
    assert not [a for a in d.actions if isinstance(a, CreateActB)]
    assert d.status.act_b is None, "the foreign GodRun was taken for this run's child"
    assert "god-run-actb exists that this run did not create (it has no owner reference)" in d.status.message
    assert "roi" in d.status.message  # the verdict's message is kept
    (warn,) = [a for a in d.actions if isinstance(a, EmitEvent) and a.reason == "ActBNameTaken"]
    assert warn.type == "Warning"
    again = r.step()  # said once, not on every reconcile
    assert not [a for a in again.actions if isinstance(a, EmitEvent | CreateActB)]
    r.cluster.why = ""  # the user deleted it: this run's own child now
    d = r.step()
    (child,) = [a for a in d.actions if isinstance(a, CreateActB)]
    assert child.body["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert d.status.act_b == "god-run-actb" and "Act B not launched" not in d.status.message


def _child(*refs: dict) -> dict:
    return {"metadata": {"name": "god-run-actb", "namespace": "lab", "ownerReferences": list(refs)}}


def _ref(uid: str, kind: str = "GodRun", name: str = "god-run") -> dict:
    return {"apiVersion": "godrun.io/v1alpha1", "kind": kind, "name": name, "uid": uid, "controller": True}


def test_the_ownership_check_of_the_act_b_child():
    run = GodRunView("god-run", "lab", 1, spec(fallback={"launchActB": True}), uid="uid-1")
    assert foreign_act_b(None, run) == ""
    assert foreign_act_b(_child(_ref("uid-1")), run) == ""
    assert foreign_act_b(_child(), run) == "it has no owner reference"
    # a GodRun of the same name deleted and re-created: its predecessor's child is not this run's
    assert "not by this run (uid uid-1)" in foreign_act_b(_child(_ref("uid-0")), run)
    assert "ConfigMap" in foreign_act_b(_child(_ref("uid-1", kind="ConfigMap")), run)
