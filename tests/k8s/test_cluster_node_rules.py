"""Node stand-in rules that need no cluster: podFailurePolicy matching, path rewriting, exit codes, faults."""

from __future__ import annotations

from pathlib import Path

from k8s.node import Fault, JobState, NodeStandIn, PodRun, exit_code_of


def standin(tmp_path: Path, **kw) -> NodeStandIn:
    from kubernetes import client

    return NodeStandIn(client.ApiClient(), "ns", tmp_path, **kw)


def state_with(policy: dict | None) -> JobState:
    return JobState("ns", "j", "uid", {"spec": {"podFailurePolicy": policy} if policy else {}})


def pod(tmp_path: Path, conditions: list[dict] | None = None) -> PodRun:
    run = PodRun("ns", "j-abcde", "uid", 0, {"name": "main"}, tmp_path, "2026-01-01T00:00:00Z")
    run.conditions = conditions or []
    return run


POLICY = {
    "rules": [
        {"action": "FailJob", "onExitCodes": {"operator": "In", "values": [2]}},
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
        {"action": "Count", "onExitCodes": {"containerName": "other", "operator": "NotIn", "values": [0]}},
        {"action": "FailJob", "onExitCodes": {"operator": "NotIn", "values": [1, 3]}},
    ]
}


def test_failure_policy_first_matching_rule_wins(tmp_path: Path) -> None:
    node, state = standin(tmp_path), state_with(POLICY)
    action, message = node._failure_policy(state, pod(tmp_path), 2)
    assert action == "FailJob"
    assert message == "Container main for pod ns/j-abcde failed with exit code 2 matching FailJob rule at index 0"
    disrupted = pod(tmp_path, [{"type": "DisruptionTarget", "status": "True"}])
    assert node._failure_policy(state, disrupted, 137)[0] == "Ignore"
    assert node._failure_policy(state, pod(tmp_path, [{"type": "DisruptionTarget", "status": "False"}]), 1) == (
        "Count",
        "",
    )
    assert node._failure_policy(state, pod(tmp_path), 7)[1].endswith("exit code 7 matching FailJob rule at index 3")
    assert node._failure_policy(state_with(None), pod(tmp_path), 2) == ("Count", "")


def test_mount_paths_are_rewritten_in_args(tmp_path: Path) -> None:
    node = standin(tmp_path, path_map={"/app": Path("/repo")})
    mounts = {"/workspace/data": Path("/host/data"), "/workspace": Path("/host/ws")}
    assert node._translate("/workspace/ckpt/best.pt", mounts) == "/host/ws/ckpt/best.pt"
    assert node._translate("/workspace/data/x.csv", mounts) == "/host/data/x.csv"
    assert node._translate("--out=/workspace/o", mounts) == "--out=/host/ws/o"
    assert node._translate("/workspaces/other", mounts) == "/workspaces/other"
    assert node._translate("/app/scripts/evaluate_validation_panel.py", mounts).startswith("/repo/scripts/")
    assert node._translate("relative/path", mounts) == "relative/path"


def test_executables_map_to_this_environment(tmp_path: Path) -> None:
    node = standin(tmp_path, python="/venv/bin/python")
    assert node._executable("python") == node._executable("/usr/bin/python3.11") == "/venv/bin/python"
    assert node._executable("/bin/sh") == "/bin/sh"


def test_signals_map_to_shell_exit_codes_and_faults_match_attempts() -> None:
    assert (exit_code_of(-9), exit_code_of(-15), exit_code_of(3)) == (137, 143, 3)
    fault = Fault(job="run-train-*", attempt=1)
    assert fault.matches("run-train-g1", 1) and not fault.matches("run-train-g1", 0)
    assert not fault.matches("run-evaluate-g1", 1)
    assert Fault(job="x", attempt=None).matches("x", 5)
