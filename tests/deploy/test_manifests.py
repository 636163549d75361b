"""Kubernetes manifests: valid for the API server, and consistent with the server and each other.

Every overlay is rendered by kustomize and validated offline against Kubernetes' own
OpenAPI schemas (kubernetes-validate, strict: unknown fields fail). The Prometheus
Operator's custom resources are checked in test_alerts.py.
"""

from __future__ import annotations

import argparse
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from i2i.serving.config import ServerConfig, add_arguments, config_from_args, env_name
from tests.deploy.conftest import (
    DEPLOY,
    OBSERVABILITY,
    TARGETS,
    load_documents,
    matches,
    only,
    render,
)

# The oldest Kubernetes the manifests are checked against (the preStop sleep action is GA
# from 1.34) and the newest whose schemas kubernetes-validate ships.
KUBERNETES_VERSIONS = ("1.34", kubernetes_validate.latest_version())
CRD_GROUP = "monitoring.coreos.com/"
PLAIN_FILES = ("jobs/build-engines-job.yaml", "storage/models-pvc.yaml")
RUN_AS = 10001
GPU = "nvidia.com/gpu"
GPU_BACKENDS_OR_AUTO = ("auto", "tensorrt", "onnxruntime", "pytorch")


def pod_spec(docs: list[dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = only(docs, "Deployment", "i2i-serve")["spec"]["template"]["spec"]
    return spec


def server(docs: list[dict[str, Any]]) -> dict[str, Any]:
    containers = {c["name"]: c for c in pod_spec(docs)["containers"]}
    assert list(containers) == ["server"], f"expected one container 'server', got {containers}"
    return containers["server"]


def all_containers(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    spec = pod_spec(docs)
    return [*spec.get("initContainers", []), *spec["containers"]]


def server_environment(docs: list[dict[str, Any]]) -> dict[str, str]:
    """The I2I_SERVE_* variables the server container gets (ConfigMap, then its own env)."""
    container = server(docs)
    environ: dict[str, str] = {}
    for source in container.get("envFrom", []):
        environ.update(only(docs, "ConfigMap", source["configMapRef"]["name"])["data"])
    environ.update({e["name"]: e["value"] for e in container.get("env", []) if "value" in e})
    return {k: v for k, v in environ.items() if k.startswith("I2I_SERVE_")}


def parse_server_config(environ: dict[str, str]) -> ServerConfig:
    parser = argparse.ArgumentParser()
    add_arguments(parser, environ)
    return config_from_args(parser.parse_args([]))


def container_port(container: dict[str, Any], name: str) -> int:
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert name in ports, f"container {container['name']} has no port named {name!r}: {ports}"
    return ports[name]


@pytest.mark.parametrize("target", [*TARGETS, "observability", *PLAIN_FILES])
def test_manifests_validate_against_the_kubernetes_schemas(
    kubectl: str, rendered: dict[str, list[dict[str, Any]]], target: str
) -> None:
    if target in rendered:
        docs = rendered[target]
    elif target == "observability":
        docs = render(kubectl, OBSERVABILITY)
    else:
        docs = load_documents(DEPLOY / target)
    checked = 0
    for doc in docs:
        if doc["apiVersion"].startswith(CRD_GROUP):
            continue  # custom resources: test_alerts.py checks their structure
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                where = "/".join(str(p) for p in error.path)
                pytest.fail(f"{doc['kind']} {doc['metadata']['name']} ({target}), {where}: {error}")
        checked += 1
    assert checked >= 1


def test_base_has_every_part_of_the_service(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for docs in rendered.values():
        kinds = sorted(d["kind"] for d in docs)
        assert kinds == sorted(
            ["ConfigMap", "Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget"]
            + ["Service", "Service", "ServiceAccount"]
        )


def test_gpu_overlay_asks_for_one_gpu_on_gpu_nodes(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    docs = rendered["gpu"]
    spec = pod_spec(docs)
    for container in all_containers(docs):
        assert str(container["resources"]["limits"][GPU]) == "1", container["name"]
        assert not container["image"].endswith("-cpu")
    assert spec["nodeSelector"].get(f"{GPU}.present") == "true"
    assert {"key": GPU, "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    labels = only(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert labels["accelerator"] == "gpu"  # the GPU alerts select on it
    assert server_environment(docs)["I2I_SERVE_BACKEND"] in GPU_BACKENDS_OR_AUTO


def test_gpu_overlay_builds_engines_into_the_repository_it_serves(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    docs = rendered["gpu"]
    spec = pod_spec(docs)
    (init,) = spec["initContainers"]
    repository = server_environment(docs)["I2I_SERVE_REPOSITORY"]
    init_mounts = {m["mountPath"]: m for m in init["volumeMounts"]}
    server_mounts = {m["mountPath"]: m for m in server(docs)["volumeMounts"]}
    assert init_mounts["/models"].get("readOnly") is True
    assert not init_mounts[repository].get("readOnly", False)  # the init container writes
    assert server_mounts[repository]["name"] == init_mounts[repository]["name"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert "emptyDir" in volumes[init_mounts[repository]["name"]]  # per pod: per GPU
    # Same settings as the server, so engines cover the batches it forms.
    assert init["envFrom"] == server(docs)["envFrom"]


def test_engine_init_script_copies_a_writable_repository_and_builds(
    rendered: dict[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    """Runs the init container's shell script, paths moved under tmp_path; `i2i` is a stub
    that records its arguments (the real command needs TensorRT and a GPU)."""
    docs = rendered["gpu"]
    (init,) = pod_spec(docs)["initContainers"]
    environ = server_environment(docs)
    models, engines, bin_dir = tmp_path / "models", tmp_path / "engines", tmp_path / "bin"
    version = models / "tiny" / "1"
    version.mkdir(parents=True)
    (version / "manifest.json").write_text("{}")
    (version / "A2B.onnx").write_bytes(b"onnx")
    for path in (version / "manifest.json", version / "A2B.onnx", version, version.parent):
        path.chmod(0o555 if path.is_dir() else 0o444)  # as a read-only volume may have it
    engines.mkdir()
    bin_dir.mkdir()
    stub = bin_dir / "i2i"
    # Records each call's arguments on one line; fails when I2I_STUB_FAIL is set.
    stub.write_text(
        f'#!/bin/sh\necho "$*" >> {tmp_path}/calls\n[ -z "${{I2I_STUB_FAIL:-}}" ] || exit 2\n'
    )
    stub.chmod(0o755)
    command = [
        part.replace(environ["I2I_SERVE_REPOSITORY"], str(engines)).replace("/models", str(models))
        for part in init["command"] + init.get("args", [])
    ]
    env = {**environ, "PATH": f"{bin_dir}:/usr/bin:/bin"}

    def run(**extra: str) -> tuple[list[str], str]:
        (tmp_path / "calls").unlink(missing_ok=True)
        for path in engines.iterdir():
            shutil.rmtree(path)
        done = subprocess.run(
            command, env={**env, **extra}, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr  # never keeps the pod from starting
        return (tmp_path / "calls").read_text().splitlines(), done.stderr

    batch = environ["I2I_SERVE_MAX_BATCH"]
    calls, _ = run()
    assert calls == [f"models build-engines {engines} --all --max-batch {batch}"]
    copied = sorted(p.relative_to(engines) for p in engines.rglob("*"))
    assert copied == sorted(p.relative_to(models) for p in models.rglob("*"))
    for path in engines.rglob("*"):  # build-engines adds plans and rewrites manifests
        assert path.stat().st_mode & stat.S_IWUSR, f"{path} is not writable"
    # Pinned versions (the server's I2I_SERVE_MODEL) and a profile from I2I_ENGINE_SHAPES.
    calls, _ = run(I2I_SERVE_MODEL="tiny:1,other", I2I_ENGINE_SHAPES="1x64x64:2x64x64:4x128x128")
    shapes = "--shapes 1x64x64:2x64x64:4x128x128"
    assert calls == [
        f"models build-engines {engines} tiny --version 1 --max-batch {batch} {shapes}",
        f"models build-engines {engines} other --max-batch {batch} {shapes}",
    ]
    # A failed build is logged and the pod starts anyway (ONNX Runtime on the GPU).
    calls, stderr = run(I2I_STUB_FAIL="1")
    assert len(calls) == 1 and "engine build failed (exit 2)" in stderr


def test_cpu_overlay_has_nothing_of_gpus(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["cpu"]
    assert "nvidia.com" not in yaml.safe_dump_all(docs)
    spec = pod_spec(docs)
    assert "nodeSelector" not in spec and "tolerations" not in spec
    assert "initContainers" not in spec
    container = server(docs)
    assert container["image"].endswith("-cpu")
    environ = server_environment(docs)
    assert environ["I2I_SERVE_BACKEND"] == "onnxruntime-cpu"
    # The threads it starts fit in the cores it may use.
    threads = int(environ["I2I_SERVE_THREADS"]) + int(environ["I2I_SERVE_WORKERS"])
    assert threads <= int(container["resources"]["limits"]["cpu"])


@pytest.mark.parametrize("target", TARGETS)
def test_server_accepts_the_configuration_it_is_given(
    rendered: dict[str, list[dict[str, Any]]], target: str
) -> None:
    docs = rendered[target]
    environ = server_environment(docs)
    parser = argparse.ArgumentParser()
    add_arguments(parser, {})
    known = {env_name(a.dest) for a in parser._actions if a.option_strings} | {"I2I_SERVE_TOKEN"}
    assert set(environ) <= known, f"not settings of i2i-serve: {set(environ) - known}"
    config = parse_server_config(environ)  # raises on a value the server would refuse
    container = server(docs)
    assert config.port == container_port(container, "grpc")
    assert config.metrics_port == container_port(container, "metrics")
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert str(config.repository) in mounts
    # Service links would set I2I_SERVE_PORT=tcp://... from the Service named i2i-serve.
    assert pod_spec(docs)["enableServiceLinks"] is False


@pytest.mark.parametrize("target", TARGETS)
def test_probes_are_native_grpc_on_the_grpc_port(
    rendered: dict[str, list[dict[str, Any]]], target: str
) -> None:
    docs = rendered[target]
    container = server(docs)
    grpc_port = container_port(container, "grpc")
    probes = {k: container[k] for k in ("startupProbe", "readinessProbe", "livenessProbe")}
    for kind, probe in probes.items():
        handlers = {"grpc", "httpGet", "tcpSocket", "exec"} & set(probe)
        assert handlers == {"grpc"}, f"{kind} must use the native gRPC probe, has {handlers}"
        assert probe["grpc"]["port"] == grpc_port, kind
        assert probe["grpc"].get("service", "") == "", kind  # the server's overall health

    def budget(probe: dict[str, Any]) -> int:
        return int(probe.get("periodSeconds", 10)) * int(probe.get("failureThreshold", 3))

    grace = parse_server_config(server_environment(docs)).grace_seconds
    assert budget(probes["startupProbe"]) >= 300  # minutes for model load and warm-up
    assert probes["readinessProbe"]["periodSeconds"] <= 10  # leaves the endpoints quickly
    assert budget(probes["livenessProbe"]) > grace  # a draining server is not restarted


@pytest.mark.parametrize("target", TARGETS)
def test_drain_fits_in_the_termination_grace_period(
    rendered: dict[str, list[dict[str, Any]]], target: str
) -> None:
    docs = rendered[target]
    spec = pod_spec(docs)
    pre_stop = server(docs)["lifecycle"]["preStop"]
    sleep = pre_stop["sleep"]["seconds"] if "sleep" in pre_stop else 0
    config = parse_server_config(server_environment(docs))
    assert sleep > 0, "preStop should wait for endpoint removal to spread"
    assert config.drain_delay_s > 0, "clients still sending after SIGTERM should hear UNAVAILABLE"
    # The drain delay and the grace period run together from SIGTERM; the port closes
    # after both.
    drain = max(config.grace_seconds, config.drain_delay_s)
    assert spec["terminationGracePeriodSeconds"] > sleep + drain


@pytest.mark.parametrize("target", TARGETS)
def test_rollouts_keep_capacity_and_spread_over_nodes(
    rendered: dict[str, list[dict[str, Any]]], target: str
) -> None:
    deployment = only(rendered[target], "Deployment")
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
    rolling = deployment["spec"]["strategy"]["rollingUpdate"]
    assert (rolling["maxUnavailable"], rolling["maxSurge"]) == (0, 1)
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert matches(deployment["spec"]["selector"]["matchLabels"], pod_labels)
    (term,) = pod_spec(rendered[target])["affinity"]["podAntiAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"
    ]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert matches(term["podAffinityTerm"]["labelSelector"]["matchLabels"], pod_labels)
    for container in all_containers(rendered[target]):
        resources = container["resources"]
        assert {"cpu", "memory"} <= set(resources["requests"]), container["name"]
        assert "memory" in resources["limits"], container["name"]


@pytest.mark.parametrize("target", TARGETS)
def test_pods_run_locked_down(rendered: dict[str, list[dict[str, Any]]], target: str) -> None:
    docs = rendered[target]
    spec = pod_spec(docs)
    pod = spec["securityContext"]
    assert (pod["runAsNonRoot"], pod["runAsUser"]) == (True, RUN_AS)
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["automountServiceAccountToken"] is False
    account = only(docs, "ServiceAccount", spec["serviceAccountName"])
    assert account["automountServiceAccountToken"] is False
    volumes = {v["name"]: v for v in spec["volumes"]}
    for container in all_containers(docs):
        context = container["securityContext"]
        assert context["runAsNonRoot"] is True and context["runAsUser"] == RUN_AS
        assert context["readOnlyRootFilesystem"] is True
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"]["drop"] == ["ALL"]
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}
        tmp = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}["/tmp"]
        assert "emptyDir" in volumes[tmp], f"{container['name']}: /tmp must be writable"


@pytest.mark.parametrize("target", TARGETS)
def test_models_come_read_only_from_the_shared_claim(
    rendered: dict[str, list[dict[str, Any]]], target: str
) -> None:
    spec = pod_spec(rendered[target])
    volumes = {v["name"]: v for v in spec["volumes"]}
    claim = volumes["models"]["persistentVolumeClaim"]
    assert claim == {"claimName": "i2i-models", "readOnly": True}
    for container in all_containers(rendered[target]):
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        assert mounts["/models"] == {"name": "models", "mountPath": "/models", "readOnly": True}
    pvc = only(load_documents(DEPLOY / "storage/models-pvc.yaml"), "PersistentVolumeClaim")
    assert pvc["metadata"]["name"] == claim["claimName"]
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]  # one claim: servers mount it read-only


@pytest.mark.parametrize("target", TARGETS)
def test_services_and_budget_select_the_pods_and_their_ports(
    rendered: dict[str, list[dict[str, Any]]], target: str
) -> None:
    docs = rendered[target]
    pod_labels = only(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    container_ports = {p["name"]: p["containerPort"] for p in server(docs)["ports"]}
    services = {s["metadata"]["name"]: s for s in docs if s["kind"] == "Service"}
    assert services["i2i-serve-headless"]["spec"]["clusterIP"] == "None"
    assert services["i2i-serve"]["spec"].get("type", "ClusterIP") == "ClusterIP"
    assert "clusterIP" not in services["i2i-serve"]["spec"]
    for service in services.values():
        assert matches(service["spec"]["selector"], pod_labels), service["metadata"]["name"]
        for port in service["spec"]["ports"]:
            assert port["targetPort"] == port["name"], "target container ports by name"
            assert port["port"] == container_ports[port["name"]]
    pdb = only(docs, "PodDisruptionBudget")
    assert matches(pdb["spec"]["selector"]["matchLabels"], pod_labels)


@pytest.mark.parametrize("target", TARGETS)
def test_autoscaler_scales_the_deployment_on_a_metric_the_adapter_serves(
    rendered: dict[str, list[dict[str, Any]]], adapter_rules: list[dict[str, Any]], target: str
) -> None:
    docs = rendered[target]
    hpa = only(docs, "HorizontalPodAutoscaler")["spec"]
    deployment = only(docs, "Deployment")
    ref = hpa["scaleTargetRef"]
    assert (ref["apiVersion"], ref["kind"], ref["name"]) == (
        deployment["apiVersion"],
        "Deployment",
        deployment["metadata"]["name"],
    )
    assert 2 <= hpa["minReplicas"] <= hpa["maxReplicas"]  # a drain never empties the service
    served = {rule["name"]["as"] for rule in adapter_rules}
    for metric in hpa["metrics"]:
        assert metric["type"] == "Pods", "queue metrics come per pod from prometheus-adapter"
        assert metric["pods"]["metric"]["name"] in served
    (queue,) = [m["pods"] for m in hpa["metrics"] if "pending" in m["pods"]["metric"]["name"]]
    # Scale when about one full batch waits per pod, whatever batch size the overlay sets.
    max_batch = server_environment(docs)["I2I_SERVE_MAX_BATCH"]
    assert queue["target"] == {"type": "AverageValue", "averageValue": max_batch}
    assert hpa["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 300
    # The adapter reads only the ServiceMonitor's job: the Operator names it after the
    # Service it scrapes (no jobLabel), so a second scrape of the pods is not counted.
    service = next(d for d in docs if d["kind"] == "Service" and "clusterIP" not in d["spec"])
    for rule in adapter_rules:
        for query in (rule["seriesQuery"], rule["metricsQuery"]):
            assert f'job="{service["metadata"]["name"]}"' in query, query


def test_engine_job_builds_on_the_gpu_type_it_names() -> None:
    job = only(load_documents(DEPLOY / "jobs/build-engines-job.yaml"), "Job")
    spec = job["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert container["command"][:3] == ["i2i", "models", "build-engines"]
    assert str(container["resources"]["limits"][GPU]) == "1"
    assert spec["nodeSelector"][f"{GPU}.product"]  # engines are per GPU type
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert container["command"][3] in mounts and not mounts["/models"].get("readOnly")


def test_every_deploy_file_is_used_or_documented() -> None:
    readme = (DEPLOY / "README.md").read_text(encoding="utf-8")
    files = sorted(p.relative_to(DEPLOY).as_posix() for p in DEPLOY.rglob("*") if p.is_file())
    missing = [f for f in files if f != "README.md" and Path(f).name not in readme]
    assert not missing, f"deploy/README.md does not mention {missing}"
