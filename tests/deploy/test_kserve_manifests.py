"""KServe manifests (deploy/kserve/): valid for KServe v0.20.0, and consistent with i2i-serve.

Offline, without a cluster:
- Every ServingRuntime and InferenceService is validated against KServe's own CRD schemas
  (vendored in tests/deploy/schemas/kserve/ with the script that made them and the licence),
  made as strict as the API server's field validation (unknown fields fail); their
  metadata and pod parts also against Kubernetes' schemas (kubernetes-validate).
- What KServe's controller and webhooks do with them is re-enacted from KServe's v0.20.0
  sources (cited at each function): runtime selection (model format, protocol version,
  autoSelect, priority), the admission checks that apply, the merge of the
  InferenceService's predictor into the runtime's container, the model mount for the
  storageUri, and the Prometheus annotations of its metrics injector. The resulting pod is
  validated against Kubernetes' schemas.
- The container's arguments are parsed by i2i-serve's own parser; ports, probes,
  annotations and the repository path must be the ones the server then uses. A real
  i2i-serve is started with the CPU runtime's arguments and answers the probes and
  /metrics where the manifests say.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import jsonschema
import kubernetes_validate
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from i2i.oip import grpc_service_pb2 as v2
from i2i.oip import grpc_service_pb2_grpc as v2_grpc
from i2i.repository import FORMAT_VERSION
from i2i.serving.config import ServerConfig, add_arguments, config_from_args
from tests.conftest import without_training_packages
from tests.deploy import load as load_dockerfile
from tests.deploy import strict
from tests.deploy.conftest import DEPLOY, load_documents, promql_metric_names, render, tool

KSERVE = DEPLOY / "kserve"
SCHEMAS = Path(__file__).parent / "schemas" / "kserve"
RUNTIMES = {"gpu": KSERVE / "servingruntime-gpu.yaml", "cpu": KSERVE / "servingruntime-cpu.yaml"}
SERVICES = {
    "gpu": KSERVE / "inferenceservice-gpu.yaml",
    "cpu": KSERVE / "inferenceservice-cpu.yaml",
}
KUBERNETES_VERSIONS = ("1.34", kubernetes_validate.latest_version())
GPU = "nvidia.com/gpu"
VENV_BIN = Path(sys.executable).parent

# KServe v0.20.0 constants (pkg/constants/constants.go).
CONTAINER = "kserve-container"  # InferenceServiceContainerName
MODEL_MOUNT = "/mnt/models"  # DefaultModelLocalMountPath
PVC_VOLUME = "kserve-pvc-source"  # PvcSourceMountName
DOWNLOAD_VOLUME = "kserve-provision-location"  # StorageInitializerVolumeName
PROTOCOLS = ("v1", "v2", "grpc-v1", "grpc-v2")  # ProtocolV1 ... ProtocolGRPCV2
AUTOSCALER_CLASSES = ("hpa", "external", "keda", "none")  # AutoscalerAllowedClassList
QUEUE_PROXY_METRICS_PORT = "9091"  # DefaultPodPrometheusPort
AGGREGATE_METRICS_PORT = "9088"  # QueueProxyAggregatePrometheusMetricsPort
ISVC_NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")  # IsvcNameFmt
# Knative Serving's ContainerMask (pkg/apis/serving/fieldmask.go): the only container
# fields a Revision accepts; Knative also takes exactly one container port, named h2c
# (HTTP/2, gRPC) or http1.
KNATIVE_CONTAINER_FIELDS = frozenset(
    {"name", "args", "command", "env", "workingDir", "envFrom", "image", "imagePullPolicy"}
    | {"livenessProbe", "ports", "readinessProbe", "resources", "securityContext"}
    | {"terminationMessagePath", "terminationMessagePolicy", "volumeMounts"}
)
# Strategic-merge keys of the container lists KServe merges (k8s.io/api core/v1 types).
MERGE_KEYS = {"ports": "containerPort", "env": "name", "volumeMounts": "mountPath"}


# ---- the schemas -------------------------------------------------------------------------


SCHEMA_FILES = {
    "ServingRuntime": "servingruntime-v1alpha1.schema.json",
    "ClusterServingRuntime": "clusterservingruntime-v1alpha1.schema.json",
    "InferenceService": "inferenceservice-v1beta1.schema.json",
}
API_VERSIONS = {
    "ServingRuntime": "serving.kserve.io/v1alpha1",
    "ClusterServingRuntime": "serving.kserve.io/v1alpha1",
    "InferenceService": "serving.kserve.io/v1beta1",
}


@pytest.fixture(scope="module")
def schemas() -> dict[str, dict[str, Any]]:
    return {kind: strict(json.loads((SCHEMAS / f).read_text())) for kind, f in SCHEMA_FILES.items()}


def one(path: Path) -> dict[str, Any]:
    (doc,) = load_documents(path)
    return doc


def validate_metadata(doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": doc["metadata"]},
        KUBERNETES_VERSIONS[0],
        strict=True,
    )


def validate_pod(spec: dict[str, Any], metadata: dict[str, Any] | None = None) -> None:
    """A pod spec, as the template of a Deployment, against Kubernetes' schemas."""
    template = {"metadata": metadata or {"labels": {"app": "check"}}, "spec": spec}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "check"},
        "spec": {"selector": {"matchLabels": {"app": "check"}}, "template": template},
    }
    template["metadata"].setdefault("labels", {})["app"] = "check"
    for version in KUBERNETES_VERSIONS:
        kubernetes_validate.validate(deployment, version, strict=True)


def validate_runtime(doc: dict[str, Any], schemas: dict[str, dict[str, Any]]) -> None:
    """CRD schema (strict), then Kubernetes' schemas for its metadata and pod parts."""
    assert doc["apiVersion"] == API_VERSIONS[doc["kind"]], doc["apiVersion"]
    jsonschema.validate(doc, schemas[doc["kind"]])
    validate_metadata(doc)
    spec = doc["spec"]
    pod_fields = ("containers", "volumes", "nodeSelector", "tolerations", "affinity")
    validate_pod({k: spec[k] for k in pod_fields if k in spec})


def validate_service(doc: dict[str, Any], schemas: dict[str, dict[str, Any]]) -> None:
    assert doc["apiVersion"] == API_VERSIONS["InferenceService"], doc["apiVersion"]
    jsonschema.validate(doc, schemas["InferenceService"])
    validate_metadata(doc)


# ---- what KServe v0.20.0 does with them ---------------------------------------------------


def model_protocol(model: dict[str, Any]) -> str:
    """ModelSpec.GetProtocol (pkg/apis/serving/v1beta1/predictor_model.go): v1 when unset."""
    return str(model.get("protocolVersion", "v1"))


def runtime_supports(model: dict[str, Any], runtime: dict[str, Any]) -> bool:
    """RuntimeSupportsModel and IsProtocolVersionSupported (predictor_model.go,
    servingruntime_types.go): a format label match (autoSelect formats only when the
    InferenceService names no runtime) and the model's protocol among the runtime's."""
    spec = runtime["spec"]
    if spec.get("disabled"):
        return False
    labels = set()
    for fmt in spec.get("supportedModelFormats", []):
        if "runtime" in model or fmt.get("autoSelect"):
            labels.add(f"mt:{fmt['name']}")
            if "version" in fmt:
                labels.add(f"mt:{fmt['name']}:{fmt['version']}")
    wanted = model["modelFormat"]
    label = f"mt:{wanted['name']}" + (f":{wanted['version']}" if "version" in wanted else "")
    protocols = spec.get("protocolVersions") or []
    return label in labels and (not protocols or model_protocol(model) in protocols)


def select_runtime(model: dict[str, Any], runtimes: list[dict[str, Any]]) -> str | None:
    """The runtime KServe's predictor reconciler picks (components/predictor.go
    reconcileModel): the named one if it supports the model, else the supporting runtimes
    by priority (GetSupportingRuntimes, sortSupportedRuntimeByPriority)."""
    if "runtime" in model:
        named = [r for r in runtimes if r["metadata"]["name"] == model["runtime"]]
        return model["runtime"] if named and runtime_supports(model, named[0]) else None

    def priority(runtime: dict[str, Any]) -> int:
        formats = runtime["spec"].get("supportedModelFormats", [])
        found = [f.get("priority") for f in formats if f["name"] == model["modelFormat"]["name"]]
        return -(found[0] or 0) if found and found[0] is not None else 1

    supporting = [r for r in runtimes if runtime_supports(model, r)]
    return min(supporting, key=priority)["metadata"]["name"] if supporting else None


def priority_conflicts(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """validateServingRuntimePriority (pkg/webhook/admission/servingruntime): two runtimes
    sharing a protocol may not give one autoSelect model format the same priority."""
    if not set(a["spec"].get("protocolVersions", [])) & set(b["spec"].get("protocolVersions", [])):
        return []
    clashes = []
    for fa in a["spec"]["supportedModelFormats"]:
        for fb in b["spec"]["supportedModelFormats"]:
            same = fa["name"].lower() == fb["name"].lower() and fa.get("version") == fb.get(
                "version"
            )
            both = same and fa.get("autoSelect") and fb.get("autoSelect")
            if both and fa.get("priority") is not None and fa.get("priority") == fb.get("priority"):
                clashes.append(fa["name"])
    return clashes


def deployment_mode(isvc: dict[str, Any]) -> str:
    """GetDeploymentMode: the annotation (legacy names mapped), else the default, Standard."""
    mode = isvc["metadata"].get("annotations", {}).get("serving.kserve.io/deploymentMode")
    return {"RawDeployment": "Standard", "Serverless": "Knative"}.get(mode, mode or "Standard")


def admission_errors(isvc: dict[str, Any]) -> list[str]:
    """The InferenceService webhook's checks that concern these manifests
    (v1beta1/inference_service_validation.go validateInferenceService, component.go)."""
    errors = []
    annotations = isvc["metadata"].get("annotations", {})
    predictor = isvc["spec"]["predictor"]
    if not ISVC_NAME.match(isvc["metadata"]["name"]):
        errors.append(f"name {isvc['metadata']['name']!r} is not a valid InferenceService name")
    autoscaler = annotations.get("serving.kserve.io/autoscalerClass")
    if autoscaler is not None and autoscaler not in AUTOSCALER_CLASSES:
        errors.append(f"[{autoscaler}] is not a supported autoscaler class type")
    low, high = predictor.get("minReplicas", 1), predictor.get("maxReplicas", 0)
    if low < 0 or high < 0 or (high != 0 and low > high):
        errors.append(f"replicas: min {low}, max {high}")
    protocol = predictor.get("model", {}).get("protocolVersion")
    if protocol is not None and protocol not in PROTOCOLS:
        errors.append(f"protocolVersion {protocol!r}")
    metric = predictor.get("scaleMetric")
    metrics = predictor.get("autoScaling", {}).get("metrics", [])
    if deployment_mode(isvc) == "Standard":
        if autoscaler in (None, "hpa"):  # validateScalingHPACompExtension
            if (metric or "cpu") not in ("cpu", "memory"):
                errors.append(f"[{metric}] is not a supported metric")
            if any(m["type"] != "Resource" for m in metrics):
                errors.append("HPA: only Resource metrics")
        elif autoscaler == "keda":  # validateScalingKedaCompExtension
            if metric is not None:
                errors.append("ScaleMetric is not supported for KEDA")
            for m in metrics:
                if m["type"] == "External":
                    if not m["external"]["metric"].get("query"):
                        errors.append("the query should not be empty")
                    if "value" not in m["external"]["target"]:
                        errors.append("the target threshold value should not be empty")
    else:  # Knative's autoscaler: validateScalingKPACompExtension
        if "deploymentStrategy" in predictor:
            errors.append("deploymentStrategy is only supported for raw deployment mode")
        if (metric or "concurrency") not in ("concurrency", "rps"):
            errors.append(f"[{metric}] is not a supported metric")
    return errors


def merge(base: Any, patch: Any, key: str | None = None) -> Any:
    """A strategic merge patch of Kubernetes objects, for what KServe merges
    (MergeContainerWithPatch, MergePodSpec): maps merge, lists with a merge key merge by
    it, other lists and scalars are replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for name, value in patch.items():
            out[name] = merge(base[name], value, name) if name in base else value
        return out
    if isinstance(base, list) and isinstance(patch, list) and key in MERGE_KEYS:
        by_key = {item[MERGE_KEYS[key]]: item for item in base}
        for item in patch:
            found = by_key.get(item[MERGE_KEYS[key]])
            by_key[item[MERGE_KEYS[key]]] = merge(found, item) if found else item
        return list(by_key.values())
    return patch


def predictor_container(runtime: dict[str, Any], isvc: dict[str, Any]) -> dict[str, Any]:
    """MergeRuntimeContainers (inferenceservice/utils/utils.go): the predictor's model spec
    patched onto the runtime container named kserve-container; args concatenated (runtime's,
    then the InferenceService's)."""
    (container,) = [c for c in runtime["spec"]["containers"] if c["name"] == CONTAINER]
    model = {
        k: v
        for k, v in isvc["spec"]["predictor"]["model"].items()
        if k not in ("modelFormat", "runtime", "protocolVersion", "storageUri", "runtimeVersion")
    }
    merged: dict[str, Any] = merge(container, model)
    merged["args"] = container.get("args", []) + model.get("args", [])
    return merged


PREDICTOR_NON_POD_FIELDS = frozenset(
    {"model", "minReplicas", "maxReplicas", "scaleTarget", "scaleMetric", "scaleMetricType"}
    | {"autoScaling", "containerConcurrency", "timeout", "canaryTrafficPercent", "logger"}
    | {"batcher", "labels", "annotations", "deploymentStrategy", "name", "storageUris"}
    | {"storageContainerName"}
)
RUNTIME_POD_FIELDS = ("nodeSelector", "affinity", "tolerations", "volumes", "imagePullSecrets")


def predictor_pod(runtime: dict[str, Any], isvc: dict[str, Any]) -> dict[str, Any]:
    """The predictor's pod spec after KServe's controller (buildPodSpec, MergePodSpec) and
    its storage-initializer webhook (storage_initializer_injector.go, utils/storage.go):
    pvc:// mounts the claim (sub-path = the URI's path) read-only at /mnt/models; other
    URIs get a storage-initializer init container that downloads into an emptyDir there."""
    predictor = isvc["spec"]["predictor"]
    runtime_pod = {k: runtime["spec"][k] for k in RUNTIME_POD_FIELDS if k in runtime["spec"]}
    isvc_pod = {k: v for k, v in predictor.items() if k not in PREDICTOR_NON_POD_FIELDS}
    spec: dict[str, Any] = merge(runtime_pod, isvc_pod)
    container = predictor_container(runtime, isvc)
    container.setdefault("env", []).append({"name": "INFERENCE_SERVICE_NAME", "value": "x"})
    uri = predictor["model"]["storageUri"]
    spec["containers"] = [container]
    volumes = spec.setdefault("volumes", [])
    if uri.startswith("pvc://"):
        claim, _, sub_path = uri.removeprefix("pvc://").partition("/")
        mount = {"name": PVC_VOLUME, "mountPath": MODEL_MOUNT, "readOnly": True}
        container.setdefault("volumeMounts", []).append(
            {**mount, "subPath": sub_path} if sub_path else mount
        )
        volumes.append({"name": PVC_VOLUME, "persistentVolumeClaim": {"claimName": claim}})
    else:
        mount = {"name": DOWNLOAD_VOLUME, "mountPath": MODEL_MOUNT, "readOnly": True}
        container.setdefault("volumeMounts", []).append(mount)
        volumes.append({"name": DOWNLOAD_VOLUME, "emptyDir": {}})
        spec["initContainers"] = [
            {
                "name": "storage-initializer",
                "image": "kserve/storage-initializer:v0.20.0",
                "args": [uri, MODEL_MOUNT],
                "volumeMounts": [{"name": DOWNLOAD_VOLUME, "mountPath": MODEL_MOUNT}],
            }
        ]
    return spec


def pod_annotations(
    runtime: dict[str, Any], isvc: dict[str, Any], cluster_default: str = "false"
) -> dict[str, str]:
    """The predictor pod's annotations: the runtime's and the InferenceService's (predictor.go
    buildObjectMeta), then KServe's metrics injector (metrics_aggregate_injector.go), whose
    defaults come from the cluster's inferenceservice-config (`cluster_default`)."""
    out = {**runtime["spec"].get("annotations", {}), **isvc["metadata"].get("annotations", {})}
    out.update(isvc["spec"]["predictor"].get("annotations", {}))
    aggregate = out.setdefault("serving.kserve.io/enable-metric-aggregation", cluster_default)
    scrape = out.setdefault("serving.kserve.io/enable-prometheus-scraping", cluster_default)
    if scrape == "true":
        port = AGGREGATE_METRICS_PORT if aggregate == "true" else QUEUE_PROXY_METRICS_PORT
        out.update({"prometheus.io/port": port, "prometheus.io/path": "/metrics"})
    return out


def queue_proxy_scrapes(annotations: dict[str, str]) -> tuple[int, str] | None:
    """Where Knative's queue-proxy reads the server's metrics when aggregation is on
    (KSERVE_CONTAINER_PROMETHEUS_METRICS_PORT/PATH; 8080 and /metrics by default)."""
    if annotations.get("serving.kserve.io/enable-metric-aggregation") != "true":
        return None
    port = annotations.get("prometheus.kserve.io/port", "8080")
    return int(port), annotations.get("prometheus.kserve.io/path", "/metrics")


def server_config(args: list[str], environ: dict[str, str] | None = None) -> ServerConfig:
    """i2i-serve's settings from these arguments, by its own parser."""
    parser = argparse.ArgumentParser(prog="i2i-serve", exit_on_error=False)
    add_arguments(parser, environ or {})
    return config_from_args(parser.parse_args(args))


def pair(variant: str) -> tuple[dict[str, Any], dict[str, Any]]:
    return one(RUNTIMES[variant]), one(SERVICES[variant])


def valid_port_name(name: str) -> bool:
    """Kubernetes' IsValidPortName (apimachinery validation.go, IANA service names)."""
    return (
        len(name) <= 15
        and re.fullmatch(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?", name) is not None
        and "--" not in name
        and re.search("[a-z]", name) is not None
    )


def service_app_protocol(port: dict[str, Any]) -> str | None:
    """The appProtocol KServe gives the predictor Service's port in Standard mode
    (reconcilers/service/service_reconciler.go getAppProtocol): HTTP/2 for a port whose
    name holds "grpc" or "h2c", else none (HTTP/1 through gateways and meshes)."""
    name = port.get("name", "")
    return "kubernetes.io/h2c" if "grpc" in name or "h2c" in name else None


def h2c_port(container: dict[str, Any]) -> int:
    """The one container port: named h2c, which Knative (HTTP/2 to the container) and
    KServe's Standard-mode Service (port 80, appProtocol h2c) both need for gRPC."""
    ports = container["ports"]
    assert [p["name"] for p in ports] == ["h2c"], f"one port, named h2c: {ports}"
    assert valid_port_name(ports[0]["name"]) and ports[0].get("protocol", "TCP") == "TCP"
    assert service_app_protocol(ports[0]) == "kubernetes.io/h2c"
    return int(ports[0]["containerPort"])


# ---- schemas and admission -----------------------------------------------------------------


@pytest.mark.parametrize("variant", sorted(RUNTIMES))
@pytest.mark.parametrize("kind", ["ServingRuntime", "ClusterServingRuntime"])
def test_runtimes_validate_as_either_kind(
    variant: str, kind: str, schemas: dict[str, dict[str, Any]]
) -> None:
    runtime = one(RUNTIMES[variant])
    assert runtime["kind"] == "ServingRuntime"
    validate_runtime({**runtime, "kind": kind}, schemas)


@pytest.mark.parametrize("variant", sorted(SERVICES))
def test_inference_services_validate_and_pass_admission(
    variant: str, schemas: dict[str, dict[str, Any]]
) -> None:
    runtime, isvc = pair(variant)
    validate_service(isvc, schemas)
    assert admission_errors(isvc) == []
    spec = predictor_pod(runtime, isvc)
    validate_pod(spec)


def test_the_two_runtimes_can_be_installed_together() -> None:
    gpu, cpu = one(RUNTIMES["gpu"]), one(RUNTIMES["cpu"])
    assert priority_conflicts(gpu, cpu) == []
    same = copy.deepcopy(cpu)
    same["spec"]["supportedModelFormats"][0]["priority"] = 2
    assert priority_conflicts(gpu, same) == ["i2i"]


def test_schema_trimming_only_drops_what_is_unused() -> None:
    """The trimmed InferenceService schema keeps spec.predictor.model and the pod fields."""
    schema = json.loads((SCHEMAS / SCHEMA_FILES["InferenceService"]).read_text())
    predictor = schema["properties"]["spec"]["properties"]["predictor"]["properties"]
    for name in ("model", "containers", "volumes", "autoScaling", "minReplicas", "scaleMetric"):
        assert name in predictor
    assert "v0.20.0" in schema["$comment"] and "Apache-2.0" in schema["$comment"]


_DELETE = object()


def _set(path: str, value: Any) -> Any:
    """A change to one field (dotted path, list indexes as numbers); _DELETE removes it."""

    def change(doc: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = doc
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        if value is _DELETE:
            del node[last]
        else:
            node[int(last) if last.isdigit() else last] = value

    return change


@pytest.mark.parametrize(
    ("change", "error"),
    [
        (_set("spec.containers.0.args", "--port=8081"), jsonschema.ValidationError),
        (_set("spec.containers.0.commnd", ["i2i-serve"]), jsonschema.ValidationError),
        (_set("spec.protocolVersion", ["grpc-v2"]), jsonschema.ValidationError),
        (_set("spec.supportedModelFormats.0.priority", 0), jsonschema.ValidationError),
        (_set("spec.supportedModelFormats.0.name", _DELETE), jsonschema.ValidationError),
        (_set("spec.containers.0.ports.0.containerPort", "h2c"), jsonschema.ValidationError),
        (_set("spec.containers.0.readinessProbe.grpc.prt", 8081), jsonschema.ValidationError),
        (_set("spec.containers.0.resources.limits", "1"), jsonschema.ValidationError),
    ],
    ids=["args-string", "misspelt-field", "protocolVersion-singular", "priority-0",
         "format-without-name", "port-as-name", "probe-field", "limits-string"],
)  # fmt: skip
def test_a_broken_runtime_fails_validation(
    change: Any, error: type[Exception], schemas: dict[str, dict[str, Any]]
) -> None:
    runtime = copy.deepcopy(one(RUNTIMES["gpu"]))
    change(runtime)
    with pytest.raises(error):
        validate_runtime(runtime, schemas)


@pytest.mark.parametrize(
    ("change", "error"),
    [
        (_set("spec.predictor.model.storageURI", "pvc://i2i-models"), "schema"),
        (_set("spec.predictor.minReplicas", "1"), "schema"),
        (_set("spec.predictor.scaleMetric", "queue"), "schema"),
        (_set("spec.predictor.autoScaling.metrics.0.type", "Pods"), "schema"),
        (_set("spec.predictor.model.modelFormat", "i2i"), "schema"),
        (_set("spec.predictor.triton", {"storageUri": "pvc://x"}), "schema"),
        (_set("spec.predictor.minReplicas", 5), "admission"),
        (_set("spec.predictor.scaleMetric", "concurrency"), "admission"),
        (_set("spec.predictor.autoScaling.metrics.0.external.metric.query", ""), "admission"),
        (lambda d: d["metadata"]["annotations"].update(
            {"serving.kserve.io/autoscalerClass": "kpa"}), "admission"),
    ],
    ids=["storageURI", "replicas-string", "scaleMetric-enum", "metric-type-enum",
         "modelFormat-string", "framework-predictor", "min-above-max", "concurrency-on-hpa-keda",
         "empty-keda-query", "autoscaler-class"],
)  # fmt: skip
def test_a_broken_inference_service_is_refused(
    change: Any, error: str, schemas: dict[str, dict[str, Any]]
) -> None:
    isvc = copy.deepcopy(one(SERVICES["gpu"]))
    change(isvc)
    if error == "schema":
        with pytest.raises(jsonschema.ValidationError):
            validate_service(isvc, schemas)
    else:
        validate_service(isvc, schemas)
        assert admission_errors(isvc), "the webhook would accept it"


# ---- runtime selection -------------------------------------------------------------------


@pytest.mark.parametrize("variant", sorted(SERVICES))
def test_each_inference_service_gets_its_runtime(variant: str) -> None:
    runtimes = [one(p) for p in RUNTIMES.values()]
    isvc = one(SERVICES[variant])
    model = isvc["spec"]["predictor"]["model"]
    assert select_runtime(model, runtimes) == f"i2i-serve-{variant}"
    # Without a runtime name, the v2 protocol still finds an i2i runtime (the GPU one first).
    unnamed = {k: v for k, v in model.items() if k != "runtime"}
    assert select_runtime(unnamed, runtimes) == "i2i-serve-gpu"
    assert select_runtime(unnamed, [one(RUNTIMES["cpu"])]) == "i2i-serve-cpu"


def test_runtime_format_is_the_repository_format() -> None:
    for path in RUNTIMES.values():
        (fmt,) = one(path)["spec"]["supportedModelFormats"]
        assert (fmt["name"], fmt["version"], fmt["autoSelect"]) == (
            "i2i",
            str(FORMAT_VERSION),
            True,
        )
    for path in SERVICES.values():
        assert one(path)["spec"]["predictor"]["model"]["modelFormat"] == {
            "name": "i2i",
            "version": str(FORMAT_VERSION),
        }


@pytest.mark.parametrize(
    "change",
    [
        lambda m, r: m.pop("protocolVersion"),  # KServe then assumes v1
        lambda m, r: m.update(protocolVersion="v2"),  # REST: i2i-serve has no HTTP
        lambda m, r: r["spec"].update(protocolVersions=["grpc-v1"]),
        lambda m, r: m["modelFormat"].update(version="2"),
        lambda m, r: m.update(runtime="kserve-tritonserver"),
    ],
    ids=["no-protocol", "rest-v2", "runtime-without-grpc-v2", "other-format", "unknown-runtime"],
)
def test_a_mismatched_model_finds_no_runtime(change: Any) -> None:
    runtime = copy.deepcopy(one(RUNTIMES["gpu"]))
    model = copy.deepcopy(one(SERVICES["gpu"])["spec"]["predictor"]["model"])
    change(model, runtime)
    assert select_runtime(model, [runtime]) is None
    if model["runtime"] == "i2i-serve-gpu":  # nor does auto-selection find one
        unnamed = {k: v for k, v in model.items() if k != "runtime"}
        assert select_runtime(unnamed, [runtime]) is None


def test_runtimes_speak_only_the_v2_grpc_protocol() -> None:
    for path in RUNTIMES.values():
        assert one(path)["spec"]["protocolVersions"] == ["grpc-v2"]


# ---- the container against i2i-serve -----------------------------------------------------


@pytest.mark.parametrize("variant", sorted(SERVICES))
def test_arguments_parse_and_match_ports_probes_and_annotations(variant: str) -> None:
    runtime, isvc = pair(variant)
    spec = predictor_pod(runtime, isvc)
    (container,) = spec["containers"]
    assert container["command"] == ["i2i-serve"]
    # As on a pod beside the plain deployment's Service named i2i-serve (service links).
    links = {"I2I_SERVE_PORT": "tcp://10.0.0.7:8001", "I2I_SERVE_SERVICE_PORT": "8001"}
    config = server_config(container["args"], links)
    port = h2c_port(container)
    assert config.port == port
    assert config.host == "0.0.0.0" and config.repository == Path(MODEL_MOUNT)
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        if probe in container:
            assert container[probe]["grpc"] == {"port": port}, probe
            assert "service" not in container[probe]["grpc"]  # the overall health
    assert "readinessProbe" in container and "livenessProbe" in container
    annotations = runtime["spec"]["annotations"]
    assert config.metrics_port is not None
    assert annotations["prometheus.kserve.io/port"] == str(config.metrics_port)
    assert annotations["prometheus.kserve.io/path"] == "/metrics"
    assert annotations["prometheus.io/port"] == str(config.metrics_port)
    assert config.metrics_port != port
    # The image's own defaults (Dockerfile ENV) would be 8001/8002/json: the args set them.
    assert config.log_format == "json"


def test_inference_service_arguments_override_the_runtimes() -> None:
    """KServe appends the InferenceService's args: a repeated flag takes the later value."""
    runtime, isvc = pair("gpu")
    isvc["spec"]["predictor"]["model"]["args"] = ["--max-batch=32", "--model=day2dusk:2"]
    config = server_config(predictor_container(runtime, isvc)["args"])
    assert config.max_batch == 32
    assert [(m.name, m.version) for m in config.models] == [("day2dusk", 2)]


def test_a_bad_argument_is_caught_by_the_parser() -> None:
    runtime, isvc = pair("cpu")
    runtime["spec"]["containers"][0]["args"].append("--backend=cuda")
    with pytest.raises(argparse.ArgumentError):
        server_config(predictor_container(runtime, isvc)["args"])


@pytest.mark.parametrize("variant", sorted(SERVICES))
def test_repository_is_where_kserve_mounts_the_storage_uri(variant: str) -> None:
    runtime, isvc = pair(variant)
    spec = predictor_pod(runtime, isvc)
    (container,) = spec["containers"]
    config = server_config(container["args"])
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts[str(config.repository)]["name"] == PVC_VOLUME
    assert mounts[str(config.repository)]["readOnly"] is True  # the server only reads it
    volumes = {v["name"]: v for v in spec["volumes"]}
    claim = one(DEPLOY / "storage" / "models-pvc.yaml")["metadata"]["name"]
    assert volumes[PVC_VOLUME]["persistentVolumeClaim"]["claimName"] == claim
    # HOME and caches go to a writable emptyDir: the root filesystem is read-only.
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert "emptyDir" in volumes[mounts[env["HOME"]]["name"]]


@pytest.mark.parametrize("uri", ["s3://models/i2i/repository", "gs://models/i2i"])
def test_object_storage_uris_are_downloaded_to_the_same_path(uri: str) -> None:
    runtime, isvc = pair("gpu")
    isvc["spec"]["predictor"]["model"]["storageUri"] = uri
    spec = predictor_pod(runtime, isvc)
    validate_pod(spec)
    (container,) = spec["containers"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts[str(server_config(container["args"]).repository)] == DOWNLOAD_VOLUME


def test_gpu_variant_asks_for_a_gpu_on_gpu_nodes() -> None:
    runtime, isvc = pair("gpu")
    spec = predictor_pod(runtime, isvc)
    (container,) = spec["containers"]
    assert str(container["resources"]["limits"][GPU]) == "1"
    assert not container["image"].endswith("-cpu")
    assert spec["nodeSelector"][f"{GPU}.present"] == "true"
    assert {"key": GPU, "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    config = server_config(container["args"])
    assert config.backend in ("auto", "tensorrt", "onnxruntime")
    assert runtime["spec"]["labels"]["accelerator"] == "gpu"


def test_cpu_variant_asks_for_no_gpu_and_runs_onnx_runtime_on_cpus() -> None:
    runtime, isvc = pair("cpu")
    assert GPU not in json.dumps(runtime) + json.dumps(isvc)
    (container,) = predictor_pod(runtime, isvc)["containers"]
    assert container["image"].endswith("-cpu")
    config = server_config(container["args"])
    assert config.backend == "onnxruntime-cpu"
    cpus = float(container["resources"]["limits"]["cpu"])
    assert config.threads is not None and config.threads + config.workers <= cpus


def test_gpu_pods_drain_within_their_grace_period() -> None:
    runtime, isvc = pair("gpu")
    spec = predictor_pod(runtime, isvc)
    (container,) = spec["containers"]
    config = server_config(container["args"])
    sleep = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    budget = sleep + max(config.grace_seconds, config.drain_delay_s)
    assert spec["terminationGracePeriodSeconds"] > budget


def test_knative_variant_uses_only_what_a_knative_revision_accepts() -> None:
    runtime, isvc = pair("cpu")
    assert deployment_mode(isvc) == "Knative"
    (container,) = predictor_pod(runtime, isvc)["containers"]
    extra = set(container) - KNATIVE_CONTAINER_FIELDS
    assert not extra, f"Knative refuses container fields {sorted(extra)}"
    h2c_port(container)
    assert "terminationGracePeriodSeconds" not in isvc["spec"]["predictor"]
    # The GPU runtime (Standard mode) has a preStop hook and a startupProbe: not Knative's.
    (gpu,) = predictor_pod(*pair("gpu"))["containers"]
    assert set(gpu) - KNATIVE_CONTAINER_FIELDS == {"lifecycle", "startupProbe"}
    assert deployment_mode(one(SERVICES["gpu"])) == "Standard"


@pytest.mark.parametrize("variant", sorted(SERVICES))
def test_inference_service_ports_merge_into_the_runtimes_one(variant: str) -> None:
    runtime, isvc = pair(variant)
    (container,) = predictor_pod(runtime, isvc)["containers"]
    assert h2c_port(container) == server_config(container["args"]).port
    isvc["spec"]["predictor"]["model"]["ports"][0]["containerPort"] = 9000
    (moved,) = predictor_pod(runtime, isvc)["containers"]
    with pytest.raises(AssertionError, match="one port, named h2c"):
        h2c_port(moved)


@pytest.mark.parametrize("name", ["grpc", "http", "h2c_port", "H2C", "h2c-over-fifteen"])
def test_a_port_not_named_h2c_is_refused(name: str) -> None:
    runtime, isvc = pair("cpu")
    for doc in (runtime["spec"]["containers"][0], isvc["spec"]["predictor"]["model"]):
        doc["ports"][0]["name"] = name
    (container,) = predictor_pod(runtime, isvc)["containers"]
    with pytest.raises(AssertionError):
        h2c_port(container)


def test_port_name_rules() -> None:
    assert valid_port_name("h2c") and valid_port_name("grpc-v2")
    assert not any(valid_port_name(n) for n in ("H2C", "h2c_port", "h2c-over-fifteen", "80"))
    assert service_app_protocol({"name": "http"}) is None


# ---- metrics and autoscaling -------------------------------------------------------------


@pytest.mark.parametrize("cluster_default", ["false", "true"])
def test_prometheus_finds_the_servers_metrics_in_either_mode(cluster_default: str) -> None:
    """Standard mode (no queue-proxy): the pod's prometheus.io/port is i2i-serve's metrics
    port whatever the cluster's default. Knative mode: queue-proxy aggregates i2i-serve's
    metrics and the pod is scraped on the aggregate port."""
    runtime, isvc = pair("gpu")
    config = server_config(predictor_container(runtime, isvc)["args"])
    annotations = pod_annotations(runtime, isvc, cluster_default)
    assert annotations["prometheus.io/port"] == str(config.metrics_port)
    assert annotations["prometheus.io/path"] == "/metrics"
    assert queue_proxy_scrapes(annotations) is None

    runtime, isvc = pair("cpu")
    config = server_config(predictor_container(runtime, isvc)["args"])
    annotations = pod_annotations(runtime, isvc, cluster_default)
    assert queue_proxy_scrapes(annotations) == (config.metrics_port, "/metrics")
    assert annotations["prometheus.io/port"] == AGGREGATE_METRICS_PORT

    # Without the explicit "false", a cluster defaulting to "true" would send Prometheus
    # to queue-proxy's port, which a Standard-mode pod does not have.
    runtime, isvc = pair("gpu")
    del isvc["metadata"]["annotations"]["serving.kserve.io/enable-prometheus-scraping"]
    if cluster_default == "true":
        assert pod_annotations(runtime, isvc, "true")["prometheus.io/port"] == "9091"


def test_keda_scales_on_a_metric_the_server_exports(
    exported_metric_names: frozenset[str], tmp_path: Path
) -> None:
    _, isvc = pair("gpu")
    assert isvc["metadata"]["annotations"]["serving.kserve.io/autoscalerClass"] == "keda"
    (metric,) = isvc["spec"]["predictor"]["autoScaling"]["metrics"]
    query = metric["external"]["metric"]["query"]
    assert promql_metric_names(query) == {"i2i_inference_pending_requests"}
    assert promql_metric_names(query) <= exported_metric_names
    # The pods the query selects are this InferenceService's predictor pods.
    assert f'pod=~"{isvc["metadata"]["name"]}-predictor-.*"' in query
    # Target: one full batch waiting per replica.
    runtime, _ = pair("gpu")
    config = server_config(predictor_container(runtime, isvc)["args"])
    assert int(metric["external"]["target"]["value"]) == config.max_batch
    promtool = tool("promtool")
    rules = tmp_path / "query.rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": [{"name": "q", "rules": [
        {"record": "check:keda_query", "expr": query}]}]}))  # fmt: skip
    done = subprocess.run(
        [promtool, "check", "rules", str(rules)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_knative_concurrency_target_is_one_batch_per_pod() -> None:
    runtime, isvc = pair("cpu")
    predictor = isvc["spec"]["predictor"]
    config = server_config(predictor_container(runtime, isvc)["args"])
    assert predictor["scaleMetric"] == "concurrency"
    assert predictor["scaleTarget"] == config.max_batch
    assert 1 <= predictor["minReplicas"] <= predictor["maxReplicas"]


# ---- a real i2i-serve with the runtime's arguments ---------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def served(tiny_repository: Path, tmp_path: Path) -> Iterator[tuple[int, int, Path]]:
    """i2i-serve run with the CPU runtime's merged arguments; /mnt/models is the tiny
    repository and the two ports are free ones (the rest as written)."""
    runtime, isvc = pair("cpu")
    container = predictor_container(runtime, isvc)
    port, metrics = free_port(), free_port()
    wanted = server_config(container["args"])
    swap = {
        f"--repository={MODEL_MOUNT}": f"--repository={tiny_repository}",
        f"--port={wanted.port}": f"--port={port}",
        f"--metrics-port={wanted.metrics_port}": f"--metrics-port={metrics}",
    }
    args = [swap.get(a, a) for a in container["args"]]
    assert len(set(args) - set(container["args"])) == 3, "repository or ports not swapped"
    env = without_training_packages(tmp_path / "no-torch")
    env.update({e["name"]: e["value"] for e in container["env"] if "value" in e})
    env["HOME"] = str(tmp_path)
    log = tmp_path / "server.log"
    with log.open("w") as stream:
        process = subprocess.Popen(
            [str(VENV_BIN / container["command"][0]), *args],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=stream,
            stderr=subprocess.STDOUT,
        )
    try:
        yield port, metrics, log
    finally:
        process.kill()
        process.wait(10)


def wait_serving(port: int, log: Path) -> None:
    """Call grpc.health.v1 on the port as the readiness probe does, until SERVING."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        deadline = time.monotonic() + 120
        while True:
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=3)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)


@pytest.mark.slow
def test_runtime_arguments_start_a_server_that_answers_the_probes(
    served: tuple[int, int, Path],
) -> None:
    port, metrics_port, log = served
    runtime, _ = pair("cpu")
    wait_serving(port, log)
    path = runtime["spec"]["annotations"]["prometheus.kserve.io/path"]
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}{path}", timeout=10) as reply:
        text = reply.read().decode()
    assert reply.status == 200 and "i2i_server_ready 1.0" in text


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("i2i.serving.inference") is None,
    reason="the v2 service (issue 13, i2i.serving.inference) is not in this tree yet",
)
def test_runtime_port_speaks_the_v2_protocol_the_runtime_declares(
    served: tuple[int, int, Path],
) -> None:
    """protocolVersions [grpc-v2]: the h2c port answers inference.GRPCInferenceService."""
    port, _, log = served
    wait_serving(port, log)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = v2_grpc.GRPCInferenceServiceStub(channel)
        assert stub.ServerReady(v2.ServerReadyRequest(), timeout=10).ready
        assert stub.ModelReady(v2.ModelReadyRequest(name="tiny_A2B"), timeout=10).ready
        metadata = stub.ModelMetadata(v2.ModelMetadataRequest(name="tiny_A2B"), timeout=10)
    assert [(t.name, t.datatype) for t in metadata.inputs][:1] == [("image", "UINT8")]
    assert [(t.name, t.datatype) for t in metadata.outputs] == [("translated", "UINT8")]


@pytest.mark.parametrize("variant", sorted(RUNTIMES))
def test_runtime_runs_the_serving_image_as_built(variant: str, kubectl: str) -> None:
    """The runtime's command, user and image are the Dockerfile's and the plain overlay's."""
    (container,) = one(RUNTIMES[variant])["spec"]["containers"]
    final = load_dockerfile().final
    assert container["command"] == final.last("ENTRYPOINT").exec_form()
    user, _, group = final.last("USER").value.partition(":")
    context = container["securityContext"]
    assert (str(context["runAsUser"]), str(context["runAsGroup"])) == (user, group)
    overlay = render(kubectl, DEPLOY / "overlays" / variant)
    deployment = next(d for d in overlay if d["kind"] == "Deployment")
    (server,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == server["image"]  # one release of the image for both
