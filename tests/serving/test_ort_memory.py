"""ONNX Runtime's CPU arena gives a finished run's memory back (I2I_ORT_CPU_ARENA)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from i2i.serving.backends.base import BackendError
from i2i.serving.backends.ort import SHRINK_ABOVE_PIXELS
from tests.serving.conftest import MODEL

# Runs in a fresh process, so its resident memory is this backend's alone: loads the tiny
# model's A2B, runs one SIZE x SIZE image, and prints its RSS before, at peak and after (MB).
PROBE = """
import json, re, sys
from pathlib import Path
import numpy as np
from i2i.repository import read_manifest
from i2i.serving.backends.ort import OnnxRuntimeBackend

def status(key):
    text = Path("/proc/self/status").read_text()
    return int(re.search(key + r":\\s+(\\d+)", text).group(1)) / 1024

folder, size = Path(sys.argv[1]), int(sys.argv[2])
manifest = read_manifest(folder.parent, folder.name)
artifact = next(a for a in manifest["artifacts"]
                if (a["direction"], a["format"], a["precision"]) == ("A2B", "onnx", "fp32"))
path = folder / str(manifest["version"]) / artifact["file"]
backend = OnnxRuntimeBackend(path, artifact, manifest["directions"]["A2B"], threads=1)
backend.run(np.zeros((1, 32, 32, 3), np.uint8))
before = status("VmRSS")
output = backend.run(np.zeros((1, size, size, 3), np.uint8))
del output
print(json.dumps({"before": before, "peak": status("VmHWM"), "after": status("VmRSS")}))
"""


def rss_of_one_run(repository: Path, mode: str, size: int) -> dict[str, float]:
    environ = {**os.environ, "I2I_ORT_CPU_ARENA": mode}
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(repository / MODEL), str(size)],
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads Linux's /proc")
def test_the_arena_returns_a_large_runs_memory_unless_told_to_keep_it(tiny_repository):
    assert 1024 * 1024 > SHRINK_ABOVE_PIXELS >= 512 * 512
    kept = rss_of_one_run(tiny_repository, "keep", 1024)
    shrunk = rss_of_one_run(tiny_repository, "shrink", 1024)
    small = rss_of_one_run(tiny_repository, "shrink", 512)
    for rss in (kept, shrunk, small):
        assert rss["peak"] - rss["before"] > 25  # the run's tensors, in MB
    # ONNX Runtime's default keeps the peak; shrinking gives back nearly all of it...
    assert kept["after"] - kept["before"] > 0.8 * (kept["peak"] - kept["before"])
    assert shrunk["after"] - shrunk["before"] < 0.25 * (shrunk["peak"] - shrunk["before"])
    # ...after large runs only: a small run keeps its memory for the next one.
    assert small["after"] - small["before"] > 0.8 * (small["peak"] - small["before"])


def test_an_unknown_arena_mode_is_refused_by_name(monkeypatch):
    from i2i.serving.backends.ort import _cpu_arena  # private: the message is the point

    monkeypatch.setenv("I2I_ORT_CPU_ARENA", "forever")
    with pytest.raises(BackendError, match="I2I_ORT_CPU_ARENA='forever': choose one of shrink"):
        _cpu_arena()
