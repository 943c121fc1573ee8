"""Job manifests: restricted Pod Security, failure policy, volumes, GPUs, torchrun, labels and names."""

from __future__ import annotations

import re
import shlex

import pytest
from deploy_support import restricted_violations

from godrun.controller import jobs
from godrun.core.commands import evaluator_argv, trainer_argv
from godrun.core.machine import CreateJob, GodRunView
from godrun.core.names import MAX_LABEL, act_b_name, dns_label, job_name, run_label, service_name
from godrun.spec import GodRunSpec

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def view(name: str = "god-run", **over) -> GodRunView:
    return GodRunView(name, "lab", 3, GodRunSpec.model_validate({"image": "reg/godrun:1", **over}), uid="u-1")


def train_job(v: GodRunView, name: str, generation: int) -> dict:
    return jobs.job_for(v, CreateJob("train", name, generation, tuple(trainer_argv(v.spec))))


def evaluate_job(v: GodRunView, name: str, generation: int) -> dict:
    return jobs.job_for(v, CreateJob("evaluate", name, generation, tuple(evaluator_argv(v.spec, v.name))))


def pods(job: dict) -> dict:
    return job["spec"]["template"]["spec"]


MULTI_NODE = {"resources": {"gpus": 8, "nodes": 2}, "data": {"claimName": "rwx"}}


@pytest.mark.parametrize("over", [{}, {"resources": {"gpus": 4}}, MULTI_NODE])
def test_jobs_pass_restricted_pod_security(over):
    v = view(**over)
    for job in (
        train_job(v, job_name(v.name, "train", 3), 3),
        evaluate_job(v, job_name(v.name, "evaluate", 3), 3),
    ):
        pod = pods(job)
        assert restricted_violations(pod) == []
        c = pod["containers"][0]
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        assert isinstance(pod["securityContext"]["runAsUser"], int) and pod["securityContext"]["runAsUser"] > 0
        mounts = {m["mountPath"] for m in c["volumeMounts"]}
        assert {"/workspace", "/tmp", "/dev/shm"} <= mounts


def test_pss_checker_catches_violations():
    pod = pods(train_job(view(), "x", 1))
    pod["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    pod["containers"][0]["securityContext"]["capabilities"] = {"add": ["SYS_ADMIN"]}
    pod["securityContext"]["runAsNonRoot"] = False
    del pod["containers"][0]["securityContext"]["runAsNonRoot"]
    pod["volumes"].append({"name": "h", "hostPath": {"path": "/"}})
    assert len(restricted_violations(pod)) == 5  # hostPath, escalation, no drop ALL, add, root


def test_train_job_shape():
    v = view(
        resources={"gpus": 1, "nodeSelector": {"gpu": "h100"}, "tolerations": [{"key": "gpu", "operator": "Exists"}],
                   "queueName": "team-a", "shmSize": "8Gi"},
        data={"claimName": "godrun-data", "mountPath": "/runs"},
        jobs={"backoffLimit": 5, "ttlSecondsAfterFinished": 60, "runAsUser": 4242},
    )  # fmt: skip
    name = job_name(v.name, "train", 3)
    job = train_job(v, name, 3)
    meta, spec, pod = job["metadata"], job["spec"], pods(job)
    assert meta["name"] == name and meta["namespace"] == "lab"
    assert meta["labels"]["godrun.io/run"] == "god-run" and meta["labels"]["godrun.io/stage"] == "train"
    assert meta["labels"]["app.kubernetes.io/name"] == "godrun"
    assert meta["labels"]["app.kubernetes.io/managed-by"] == "godrun-controller"
    assert meta["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    assert job["spec"]["template"]["metadata"]["labels"]["godrun.io/stage"] == "train"
    (owner,) = meta["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == ("GodRun", "god-run", "u-1", True)
    assert spec["backoffLimit"] == 5 and spec["ttlSecondsAfterFinished"] == 60
    assert spec["activeDeadlineSeconds"] == 7 * 24 * 3600
    rules = spec["podFailurePolicy"]["rules"]
    assert rules[0]["action"] == "FailJob" and rules[0]["onExitCodes"]["values"] == [2]
    assert rules[0]["onExitCodes"]["containerName"] == "trainer"
    assert rules[1]["action"] == "Ignore" and rules[1]["onPodConditions"][0]["type"] == "DisruptionTarget"
    assert pod["restartPolicy"] == "Never" and pod["nodeSelector"] == {"gpu": "h100"}
    assert pod["tolerations"] == [{"key": "gpu", "operator": "Exists"}]
    assert pod["securityContext"]["runAsUser"] == 4242
    vols = {vol["name"]: vol for vol in pod["volumes"]}
    assert vols["data"]["persistentVolumeClaim"]["claimName"] == "godrun-data"
    assert vols["dshm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "8Gi"}
    c = pod["containers"][0]
    assert c["workingDir"] == "/runs" and c["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert c["command"][:3] == ["python", "-m", "godrun.trainer"]
    assert c["command"][c["command"].index("--metrics-port") + 1] == str(jobs.TRAINER_METRICS_PORT)
    assert c["ports"][0]["containerPort"] == jobs.TRAINER_METRICS_PORT and c["ports"][0]["name"] == "metrics"
    assert {"name": "GODRUN_TERMINATION_LOG", "value": "/dev/termination-log"} in c["env"]
    assert c["terminationMessagePolicy"] == "FallbackToLogsOnError"


def test_single_node_multi_gpu_uses_our_torchrun_launcher():
    v = view(resources={"gpus": 4})
    cmd = pods(train_job(v, "j", 1))["containers"][0]["command"]
    assert cmd[:4] == ["python", "-m", "godrun.trainer.launch", "--nproc_per_node=4"] and "--nnodes=1" in cmd
    assert cmd[cmd.index("-m", 3) + 1] == "godrun.trainer"


def test_multi_node_is_indexed_job_with_headless_service():
    v = view(resources={"gpus": 8, "nodes": 3}, data={"claimName": "shared-rwx"})
    name = job_name(v.name, "train", 3)
    job = train_job(v, name, 3)
    assert job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == 3
    pod = pods(job)
    svc = jobs.headless_service(v, name, 3)
    assert pod["subdomain"] == svc["metadata"]["name"] and svc["spec"]["clusterIP"] == "None"
    assert svc["spec"]["selector"].items() <= job["spec"]["template"]["metadata"]["labels"].items()
    cmd = pod["containers"][0]["command"]
    assert "--nnodes=3" in cmd and "--nproc_per_node=8" in cmd and "--node_rank=$(JOB_COMPLETION_INDEX)" in cmd
    master = next(a for a in cmd if a.startswith("--master_addr="))
    assert master == f"--master_addr={name}-0.{svc['metadata']['name']}.lab.svc"
    assert any(e["name"] == "JOB_COMPLETION_INDEX" for e in pod["containers"][0]["env"])


def test_evaluate_job_uses_one_gpu_and_the_evaluator_command():
    v = view(resources={"gpus": 4}, panel={"expectedHash": "a" * 64})
    job = evaluate_job(v, job_name(v.name, "evaluate", 3), 3)
    c = pods(job)["containers"][0]
    assert c["name"] == "evaluator" and c["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert shlex.join(c["command"]).startswith("python -m godrun.evaluator --checkpoint-dir checkpoints/god_run")
    assert "--expected-hash" in c["command"] and job["spec"]["activeDeadlineSeconds"] == 4 * 3600
    assert job["spec"]["podFailurePolicy"]["rules"][0]["onExitCodes"]["containerName"] == "evaluator"
    cpu_only = evaluate_job(view(resources={"gpus": 0}), "e", 1)
    assert "nvidia.com/gpu" not in pods(cpu_only)["containers"][0]["resources"]["limits"]
    no_pvc = pods(cpu_only)["volumes"][0]
    assert no_pvc == {"name": "data", "emptyDir": {}}


@pytest.mark.parametrize("run", ["god-run", "a" * 63, "x.y.z-" + "b" * 200, "9lives", "A_b"])
def test_names_are_short_valid_and_deterministic(run):
    names = set()
    for stage in ("train", "evaluate"):
        for gen in (1, 2, 123456):
            n = job_name(run, stage, gen)
            assert n == job_name(run, stage, gen) and len(n) <= MAX_LABEL - 7 and DNS_LABEL.match(n), n
            names.add(n)
            svc = service_name(n)
            assert len(svc) <= MAX_LABEL and svc[0].isalpha() and DNS_LABEL.match(svc)
    assert len(names) == 6, "stage and generation must give distinct names"
    assert len(run_label(run)) <= MAX_LABEL and len(act_b_name(run)) <= 253


def test_long_names_with_a_shared_prefix_differ():
    a, b = "p" * 70 + "-one", "p" * 70 + "-two"
    assert job_name(a, "train", 1) != job_name(b, "train", 1)
    assert dns_label("a.b") != dns_label("a-b")
    assert job_name("short", "train", 2) == "short-train-g2"


def test_spec_strings_are_escaped_against_kubernetes_expansion():
    v = view(training={"log_dir": "logs/$(HOME)/x", "checkpoint_dir": "ck$"}, panel={"outputDir": "out/$(USER)"})
    train = pods(train_job(v, "t", 3))["containers"][0]["command"]
    assert train[train.index("--log_dir") + 1] == "logs/$$(HOME)/x"
    assert train[train.index("--checkpoint_dir") + 1] == "ck$$"
    ev = pods(evaluate_job(v, "e", 3))["containers"][0]["command"]
    assert ev[ev.index("--output-dir") + 1] == "out/$$(USER)" and ev[ev.index("--checkpoint-dir") + 1] == "ck$$"
    multi = view(**MULTI_NODE, training={"log_dir": "a$(B)"})
    cmd = pods(train_job(multi, "m", 3))["containers"][0]["command"]
    assert "--node_rank=$(JOB_COMPLETION_INDEX)" in cmd and cmd[cmd.index("--log_dir") + 1] == "a$$(B)"


def test_volume_ownership_changes_only_on_mismatch():
    assert pods(train_job(view(), "t", 1))["securityContext"]["fsGroupChangePolicy"] == "OnRootMismatch"


def test_pod_overrides_reach_both_stages():
    over = {
        "imagePullSecrets": ["regcred"],
        "serviceAccountName": "trainer",
        "priorityClassName": "high",
        "runtimeClassName": "nvidia",
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": []}}},
        "labels": {"team": "spectra"},
        "annotations": {"example.com/owner": "lab"},
    }
    v = view(podOverrides=over)
    for job in (train_job(v, "t", 3), evaluate_job(v, "e", 3)):
        pod, meta = pods(job), job["spec"]["template"]["metadata"]
        assert pod["imagePullSecrets"] == [{"name": "regcred"}] and pod["serviceAccountName"] == "trainer"
        assert (pod["priorityClassName"], pod["runtimeClassName"]) == ("high", "nvidia")
        assert pod["affinity"] == over["affinity"] and pod["automountServiceAccountToken"] is False
        assert meta["labels"]["team"] == "spectra"
        assert meta["labels"]["godrun.io/stage"] == job["metadata"]["labels"]["godrun.io/stage"]
        assert meta["annotations"] == {"example.com/owner": "lab"}
    plain = pods(train_job(view(), "t", 3))
    optional = {"imagePullSecrets", "serviceAccountName", "priorityClassName", "runtimeClassName", "affinity"}
    assert not optional & set(plain)


def test_multi_node_job_has_no_retries_of_its_own():
    job = train_job(view(**MULTI_NODE, jobs={"backoffLimit": 5}), "m", 3)
    assert job["spec"]["backoffLimit"] == 0
    actions = {r["action"] for r in job["spec"]["podFailurePolicy"]["rules"]}
    assert actions == {"FailJob"}  # a disrupted rank cannot rejoin: the controller recreates the whole Job
    single = train_job(view(jobs={"backoffLimit": 5}), "s", 3)
    assert single["spec"]["backoffLimit"] == 5


def test_the_job_runs_the_actions_argv_not_a_rebuilt_one():
    v = view(resources={"gpus": 4})
    argv = (*trainer_argv(v.spec), "--a_flag_decide_added", "7")
    cmd = pods(jobs.job_for(v, CreateJob("train", "j", 1, argv)))["containers"][0]["command"]
    assert cmd[cmd.index("-m", 3) :][: len(argv) - 1] == list(argv[1:]), "torchrun runs the action's argv as is"
    assert cmd[cmd.index("--metrics-port") + 1] == str(jobs.TRAINER_METRICS_PORT)
    evaluate = ("python", "-m", "godrun.evaluator", "--something-new")
    cmd = pods(jobs.job_for(v, CreateJob("evaluate", "e", 1, evaluate)))["containers"][0]["command"]
    assert cmd == list(evaluate)


def test_one_launcher_for_one_process_torchrun_and_indexed_nodes():
    from godrun.core.commands import Rendezvous, launch_command, with_option

    argv = ["python", "-m", "godrun.trainer", "--epochs", "3"]
    assert launch_command(argv, gpus=0) == argv and launch_command(argv, gpus=1) == argv
    launcher = ["python", "-m", "godrun.trainer.launch"]  # torchrun, keeping a worker's exit code
    assert launch_command(argv, gpus=2) == [
        *launcher, "--nproc_per_node=2", "--standalone", "--nnodes=1", "-m", "godrun.trainer", "--epochs", "3"
    ]  # fmt: skip
    multi = launch_command(argv, gpus=0, nodes=2, rendezvous=Rendezvous("j-0.svc", 29500))
    assert multi[:8] == [
        *launcher, "--nproc_per_node=1", "--nnodes=2", "--node_rank=$(JOB_COMPLETION_INDEX)",
        "--master_addr=j-0.svc", "--master_port=29500",
    ]  # fmt: skip
    with pytest.raises(ValueError, match="rendezvous"):
        launch_command(argv, gpus=1, nodes=2)
    with pytest.raises(ValueError, match="python -m"):
        launch_command(["torchrun", "x"], gpus=2)
    assert with_option(argv, "--epochs", "9")[-1] == "9" and with_option(argv, "--x", "1")[-2:] == ["--x", "1"]


def _job(**spec_over) -> dict:
    s = GodRunSpec.model_validate({"image": "reg/godrun:1", **spec_over})
    run = GodRunView("r", "lab", 1, s, uid="u")
    return jobs.train_job(run, job_name("r", "train", 1), 1, trainer_argv(s))


def test_run_as_user_null_leaves_the_ids_to_the_platform_and_stays_restricted():
    """OpenShift's restricted-v2 assigns the UID: the pods must not name one (runAsNonRoot still holds)."""
    pod = _job(jobs={"runAsUser": None})["spec"]["template"]["spec"]
    assert restricted_violations(pod) == []
    ctx, cctx = pod["securityContext"], pod["containers"][0]["securityContext"]
    assert not {"runAsUser", "runAsGroup", "fsGroup"} & (set(ctx) | set(cctx))
    assert ctx["runAsNonRoot"] and cctx["runAsNonRoot"]


def test_pod_overrides_env_volumes_scheduler_spread_gpu_resource_and_job_labels():
    spread = {"maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "ScheduleAnyway"}
    job = _job(
        resources={"gpus": 1, "gpuResource": "nvidia.com/mig-1g.10gb"},
        jobs={"labels": {"kueue.x-k8s.io/priority-class": "low", "team": "uv"}, "annotations": {"a": "b"}},
        podOverrides={
            "env": [{"name": "HF_HOME", "value": "/cache"}],
            "volumes": [{"name": "cache", "emptyDir": {}}],
            "volumeMounts": [{"name": "cache", "mountPath": "/cache"}],
            "schedulerName": "volcano",
            "topologySpreadConstraints": [spread],
        },
    )
    meta, pod = job["metadata"], job["spec"]["template"]["spec"]
    assert meta["labels"]["kueue.x-k8s.io/priority-class"] == "low" and meta["labels"]["team"] == "uv"
    assert meta["labels"]["godrun.io/run"] and meta["annotations"] == {"a": "b"}
    c = pod["containers"][0]
    assert (
        c["resources"]["limits"]["nvidia.com/mig-1g.10gb"] == "1" and "nvidia.com/gpu" not in c["resources"]["limits"]
    )
    assert {"name": "HF_HOME", "value": "/cache"} in c["env"] and {"name": "cache", "mountPath": "/cache"} in c[
        "volumeMounts"
    ]
    assert {"name": "cache", "emptyDir": {}} in pod["volumes"] and pod["schedulerName"] == "volcano"
    assert pod["topologySpreadConstraints"] == [spread]


@pytest.mark.parametrize(
    "over",
    [
        {"podOverrides": {"env": [{"name": "GODRUN_TERMINATION_LOG", "value": "x"}]}},
        {"podOverrides": {"volumes": [{"name": "data", "emptyDir": {}}]}},
        {"jobs": {"labels": {"godrun.io/run": "x"}}},
        {"resources": {"gpuResource": "gpu"}},
    ],
)
def test_overrides_cannot_take_the_controllers_names(over):
    with pytest.raises(ValueError):
        GodRunSpec.model_validate({"image": "x", **over})
