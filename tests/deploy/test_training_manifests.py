"""Multi-node training manifests: the Kubeflow PyTorchJobs (GPU, CPU), their claim and image.

The PyTorchJobs are validated offline against the training operator's own CRD schema
(vendored in tests/deploy/schemas/, with the script that made it and its licence), made as
strict as the API server's field validation (unknown fields fail); their pod templates and
metadata also against Kubernetes' schemas. The container's shell script is run with a
`torchrun` stub that records its arguments, which are then parsed by the real torchrun and
`i2i-train` parsers under the environment the operator gives each pod (its envvar.go).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import stat
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import torch
import torch.distributed as torch_dist
from torch.distributed.run import config_from_args, get_args_parser

from i2i.cli.train import add_train_arguments
from i2i.training import distributed
from i2i.training.config import list_presets
from tests.deploy import ROOT, parse_dockerfile, strict
from tests.deploy.conftest import DEPLOY, load_documents
from tests.deploy.test_dockerfile import hadolint

TRAINING = DEPLOY / "training"
JOBS = {"gpu": TRAINING / "pytorchjob-gpu.yaml", "cpu": TRAINING / "pytorchjob-cpu.yaml"}
SCHEMA = Path(__file__).parent / "schemas" / "pytorchjob-v1.schema.json"
GPU = "nvidia.com/gpu"
KUBERNETES_VERSION = "1.34"
# The operator's names (training-operator v1.9 pkg/apis/kubeflow.org/v1 pytorch types).
CONTAINER, PORT_NAME = "pytorch", "pytorchjob-port"


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return strict(json.loads(SCHEMA.read_text()))


@pytest.fixture(scope="module", params=sorted(JOBS))
def variant(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def job(variant: str) -> dict[str, Any]:
    (doc,) = load_documents(JOBS[variant])
    return doc


def replicas(job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    specs: dict[str, dict[str, Any]] = job["spec"]["pytorchReplicaSpecs"]
    return specs


def container(template: dict[str, Any]) -> dict[str, Any]:
    containers = {c["name"]: c for c in template["spec"]["containers"]}
    assert list(containers) == [CONTAINER], f"one container named {CONTAINER!r}: {containers}"
    return containers[CONTAINER]


def environment(c: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in c.get("env", []) if "value" in e}


def validate_job(doc: dict[str, Any], schema: dict[str, Any]) -> None:
    """CRD schema (strict), then Kubernetes' own schemas for the metadata and pod templates."""
    jsonschema.validate(doc, schema)
    kubernetes_validate.validate(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": doc["metadata"]},
        KUBERNETES_VERSION,
        strict=True,
    )
    for name, spec in replicas(doc).items():
        wrapped = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": f"check-{name.lower()}"},
            "spec": {"template": spec["template"]},
        }
        kubernetes_validate.validate(wrapped, KUBERNETES_VERSION, strict=True)


def operator_environment(job: dict[str, Any], replica: str, index: int) -> dict[str, str]:
    """The variables training-operator v1.9 adds to a pod's container (envvar.go, master.go),
    for a job with a Master and no elasticPolicy."""
    specs = replicas(job)
    total = sum(int(s.get("replicas", 1)) for s in specs.values())
    rank = index + (1 if replica == "Worker" else 0)
    port = next(p["containerPort"] for p in container(specs["Master"]["template"])["ports"])
    master = f"{job['metadata']['name']}-master-0"
    env = {
        "MASTER_ADDR": master,
        "MASTER_PORT": str(port),
        "PET_MASTER_ADDR": master,
        "PET_MASTER_PORT": str(port),
        "RANK": str(rank),
        "PET_NODE_RANK": str(rank),
        "PET_NNODES": str(total),
    }
    if "nprocPerNode" in job["spec"]:
        env["PET_NPROC_PER_NODE"] = job["spec"]["nprocPerNode"]
    return env


def mount_under(path: str, mounts: Any) -> str:
    """The deepest mount path that holds ``path``; fails if none does."""
    holding = [m for m in mounts if path.startswith(m.rstrip("/") + "/")]
    assert holding, f"{path} is on no mounted volume ({', '.join(mounts)})"
    return max(holding, key=len)


def run_script(
    c: dict[str, Any], tmp_path: Path, mounts: dict[str, Path], with_checkpoint: bool
) -> list[str]:
    """Run the container's shell script with paths moved under tmp_path and a `torchrun`
    stub on PATH; the arguments torchrun got."""
    assert c["command"] == ["/bin/sh", "-ec"], c["command"]
    (script,) = c["args"]
    env = environment(c)
    for key in ("I2I_DATA", "I2I_RUN"):
        mount = mount_under(env[key], mounts)
        env[key] = str(mounts[mount]) + env[key][len(mount) :]
    run = Path(env["I2I_RUN"])
    if with_checkpoint:
        run.mkdir(parents=True)
        (run / "latest.pt").write_bytes(b"checkpoint")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    record = tmp_path / "torchrun-args.json"
    stub = bin_dir / "torchrun"
    stub.write_text(
        "#!/usr/bin/env python3\nimport json, sys\n"
        f"json.dump(sys.argv[1:], open({str(record)!r}, 'w'))\n"
    )
    stub.chmod(stub.stat().st_mode | stat.S_IXUSR)
    environ = {"PATH": f"{bin_dir}:{os.environ['PATH']}", **env}
    done = subprocess.run(
        ["/bin/sh", "-ec", script], env=environ, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    args: list[str] = json.loads(record.read_text())
    return args


def i2i_train_arguments(args: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="i2i-train", exit_on_error=False)
    add_train_arguments(parser)
    return parser.parse_args(args)


def mounts_of(c: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["mountPath"]: m for m in c["volumeMounts"]}


def test_jobs_validate_against_the_operators_crd_schema(
    job: dict[str, Any], schema: dict[str, Any]
) -> None:
    assert (job["apiVersion"], job["kind"]) == ("kubeflow.org/v1", "PyTorchJob")
    validate_job(job, schema)
    assert set(replicas(job)) == {"Master", "Worker"}  # static rendezvous on the master


@pytest.mark.parametrize(
    ("where", "change"),
    [
        (
            "an unknown field in the container",
            lambda d: d["template"]["spec"]["containers"][0].update(commnd=["i2i-train"]),
        ),  # fmt: skip
        ("replicas as a string", lambda d: d.update(replicas="two")),
        ("a misspelt replica spec field", lambda d: d.update(restartPolcy="OnFailure")),
        ("nprocPerNode as a number", None),
    ],
)
def test_a_wrong_field_fails_validation(
    job: dict[str, Any], schema: dict[str, Any], where: str, change: Any
) -> None:
    broken = copy.deepcopy(job)
    if change is None:
        broken["spec"]["nprocPerNode"] = 1
    else:
        change(broken["spec"]["pytorchReplicaSpecs"]["Worker"])
    with pytest.raises((jsonschema.ValidationError, kubernetes_validate.ValidationError)):
        validate_job(broken, schema)


def test_training_claim_validates() -> None:
    (claim,) = load_documents(TRAINING / "training-pvc.yaml")
    kubernetes_validate.validate(claim, KUBERNETES_VERSION, strict=True)
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]  # every pod of the job mounts it


@pytest.mark.parametrize("replica", ["Master", "Worker"])
@pytest.mark.parametrize("resuming", [False, True], ids=["new", "restarted"])
def test_command_is_torchrun_of_i2i_train_with_arguments_that_parse(
    job: dict[str, Any],
    replica: str,
    resuming: bool,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    template = replicas(job)[replica]["template"]
    c = container(template)
    mounts = mounts_of(c)
    moved = {path: tmp_path / path.strip("/").replace("/", "_") for path in mounts}
    args = run_script(c, tmp_path, moved, with_checkpoint=resuming)

    # torchrun, as the pod's torchrun parses it under the operator's variables.
    for key in [k for k in os.environ if k.startswith("PET_")]:
        monkeypatch.delenv(key)
    for key, value in operator_environment(job, replica, 0).items():
        monkeypatch.setenv(key, value)
    launch = get_args_parser().parse_args(args)
    assert launch.no_python and launch.training_script == "i2i-train"
    nodes = sum(int(s["replicas"]) for s in replicas(job).values())
    assert launch.nnodes == str(nodes)
    assert launch.node_rank == (0 if replica == "Master" else 1)
    assert launch.nproc_per_node == job["spec"]["nprocPerNode"]
    config, command, _ = config_from_args(launch)
    assert (config.min_nodes, config.max_nodes) == (nodes, nodes)  # a fixed world size
    assert config.rdzv_backend == "static"
    assert config.rdzv_endpoint == f"{job['metadata']['name']}-master-0:23456"
    # SIGTERM: i2i saves within torchrun's shutdown timeout, within the pod's grace period.
    grace = template["spec"]["terminationGracePeriodSeconds"]
    assert 60 <= float(launch.shutdown_timeout) < grace

    # i2i-train, by its own parser.
    ns = i2i_train_arguments(launch.training_script_args)
    env = environment(c)
    assert ns.device == env["I2I_DEVICE"] and ns.no_progress
    run_mount = mount_under(env["I2I_RUN"], mounts)
    assert not mounts[run_mount].get("readOnly", False), "the run folder must be writable"
    assert mounts[run_mount]["name"] == "training"
    if resuming:
        assert ns.resume == Path(env["I2I_RUN"].replace(run_mount, str(moved[run_mount]), 1))
        assert ns.config is None and ns.data is None
    else:
        assert ns.resume is None
        assert str(ns.config) in list_presets(), f"{ns.config} is no shipped preset"
        data_mount = mount_under(env["I2I_DATA"], mounts)
        assert mounts[data_mount]["name"] == "training" and mounts[data_mount]["readOnly"]
        assert ns.out == Path(env["I2I_RUN"].replace(run_mount, str(moved[run_mount]), 1))


def test_every_pod_mounts_the_training_claim(job: dict[str, Any]) -> None:
    for spec in replicas(job).values():
        volumes = {v["name"]: v for v in spec["template"]["spec"]["volumes"]}
        assert volumes["training"]["persistentVolumeClaim"]["claimName"] == "i2i-training"
        ports = {p["name"]: p["containerPort"] for p in container(spec["template"])["ports"]}
        assert ports == {PORT_NAME: 23456}  # the operator's master endpoint
        assert spec["restartPolicy"] == "OnFailure"  # a failed pod restarts and resumes


def test_gpu_job_asks_for_gpus_and_trains_on_cuda() -> None:
    (job,) = load_documents(JOBS["gpu"])
    for spec in replicas(job).values():
        c = container(spec["template"])
        assert str(c["resources"]["limits"][GPU]) == job["spec"]["nprocPerNode"]
        assert environment(c)["I2I_DEVICE"] == "cuda"
        assert not c["image"].endswith("-cpu")
        pod = spec["template"]["spec"]
        assert {"key": GPU, "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]


def test_cpu_job_asks_for_no_gpu() -> None:
    text = JOBS["cpu"].read_text()
    (job,) = load_documents(JOBS["cpu"])
    assert GPU not in json.dumps(job), "the CPU job names nvidia.com/gpu"
    assert "NCCL" not in text.split("apiVersion:", 1)[1]
    for spec in replicas(job).values():
        c = container(spec["template"])
        assert environment(c)["I2I_DEVICE"] == "cpu" and c["image"].endswith("-cpu")


@pytest.mark.parametrize(("cuda", "backend"), [(True, "nccl"), (False, "gloo")])
def test_process_group_backend_follows_the_pods_device(
    cuda: bool, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the pods' i2i-train joins: NCCL where the GPU job's CUDA is visible, gloo on the
    CPU job (the process group itself is stood in: no second process is started)."""
    joined: list[str] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch_dist, "is_initialized", lambda: False)
    monkeypatch.setattr(torch_dist, "init_process_group", lambda backend: joined.append(backend))
    for key, value in {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "0"}.items():
        monkeypatch.setenv(key, value)
    info = distributed.setup()
    assert joined == [backend] and info.world_size == 2 and info.rank == 1


def test_training_image_runs_torchrun_of_i2i_train() -> None:
    path = TRAINING / "Dockerfile"
    done = subprocess.run(
        [hadolint(), "--no-color", str(path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    dockerfile = parse_dockerfile(path.read_text())
    final = dockerfile.final
    assert final.last("ENTRYPOINT").exec_form() == ["torchrun", "--no-python", "i2i-train"]
    assert final.last("USER").value == "10001:10001"  # the jobs' runAsUser
    install = final.last("RUN").value
    assert "torch==${TORCH_VERSION}" in install and "[train]" in install
    assert (ROOT / "src" / "i2i" / "cli" / "train.py").is_file()


@pytest.mark.parametrize("resuming", [False, True], ids=["new", "requeued"])
def test_slurm_script_runs_torchrun_of_i2i_train_per_node(
    tmp_path: Path, resuming: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """deploy/slurm/train.sbatch under stand-ins for scontrol and srun (no Slurm here): the
    torchrun it starts parses to a c10d rendezvous on the first node, and i2i-train's
    arguments parse with i2i-train's parser."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "srun-args.json"
    stubs = {
        "scontrol": "#!/bin/sh\n[ \"$1 $2\" = 'show hostnames' ] && printf 'gpu-17\\ngpu-18\\n'\n",
        "srun": "#!/usr/bin/env python3\nimport json, sys\n"
        f"json.dump(sys.argv[1:], open({str(record)!r}, 'w'))\n",
    }
    for name, text in stubs.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    run = tmp_path / "runs" / "h2z"
    if resuming:
        run.mkdir(parents=True)
        (run / "latest.pt").write_bytes(b"checkpoint")
    environ = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "SLURM_JOB_NODELIST": "gpu-[17-18]",
        "SLURM_NNODES": "2",
        "SLURM_JOB_ID": "4242",
        "SLURM_GPUS_ON_NODE": "4",
        "SLURM_CPUS_PER_TASK": "16",
        "DATA": str(tmp_path / "datasets" / "horse2zebra"),
        "RUN": str(run),
    }
    script = DEPLOY / "slurm" / "train.sbatch"
    done = subprocess.run(
        ["bash", str(script)], env=environ, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    srun = json.loads(record.read_text())
    # The CPUs per task are passed on explicitly (not every Slurm release does it).
    assert srun[:3] == ["--kill-on-bad-exit=1", "--cpus-per-task=16", "torchrun"]
    for key in [k for k in os.environ if k.startswith("PET_")]:
        monkeypatch.delenv(key)
    launch = get_args_parser().parse_args(srun[3:])
    config, _, _ = config_from_args(launch)
    assert (config.min_nodes, config.max_nodes, config.nproc_per_node) == (2, 2, 4)
    assert (config.rdzv_backend, config.rdzv_endpoint) == ("c10d", "gpu-17:29500")
    assert config.run_id == "i2i-4242"
    assert launch.no_python and launch.training_script == "i2i-train"
    ns = i2i_train_arguments(launch.training_script_args)
    assert ns.device == "cuda" and ns.no_progress
    if resuming:
        assert (ns.resume, ns.config, ns.data) == (run, None, None)
    else:
        assert ns.out == run and ns.data == Path(environ["DATA"]) and ns.resume is None
        assert str(ns.config) in list_presets()


def test_slurm_script_names_what_is_missing(tmp_path: Path) -> None:
    script = DEPLOY / "slurm" / "train.sbatch"
    done = subprocess.run(
        ["bash", str(script)], env={"PATH": os.environ["PATH"], "RUN": str(tmp_path)},
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode != 0 and "set DATA to the dataset folder" in done.stderr
