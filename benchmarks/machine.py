"""Who measured a figure: the machine, the software, the commit, the date and the load.

Every script in benchmarks/ prints `describe(identity(...))` above its table and stores
`identity(...)` in its JSON, so a figure is never written without the machine that made
it. Standard library only (no torch, no i2i): serve.py's load generator and
pytriton_server.py import it from PyTriton's own venv too.

    python benchmarks/machine.py          # the identity of this machine, as the scripts print it
    python benchmarks/machine.py --json --packages nvidia-pytriton,tritonclient
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# The lscpu flags that decide which kernels oneDNN, MKL, OpenBLAS and ONNX Runtime may run.
SIMD_FLAGS = (
    "sse4_2", "avx", "avx2", "fma", "f16c", "avx_vnni", "avx512f", "avx512dq", "avx512bw",
    "avx512vl", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8",
)  # fmt: skip
PACKAGES = ("torch", "onnxruntime", "numpy")
PYTRITON_PACKAGES = ("nvidia-pytriton", "tritonclient", "onnxruntime", "numpy")


def lscpu() -> dict[str, str]:
    """`lscpu`'s fields ("Model name", "Flags", ...); from /proc/cpuinfo where lscpu is absent."""
    try:
        out = subprocess.run(
            ["lscpu"], capture_output=True, text=True, check=True, env=os.environ | {"LC_ALL": "C"}
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        out = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
        fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
        fields = {k.strip(): v.strip() for k, v in fields.items()}
        return {"Model name": fields.get("model name", platform.processor()),
                "Flags": fields.get("flags", "")}  # fmt: skip
    return {
        k.strip(): v.strip()
        for k, v in (line.split(":", 1) for line in out.splitlines() if ":" in line)
    }


def commit() -> str:
    """HEAD's short hash, with "+changes" when tracked files differ from it."""
    try:
        head = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError) as exc:
        return f"unknown ({type(exc).__name__}: not a git checkout?)"
    return head + ("+changes" if dirty else "")


def versions(packages: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    """Python's and the packages' versions in this interpreter (without importing them)."""
    found = {"python": platform.python_version()}
    for name in packages:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def memory_gib() -> float:
    """The machine's total memory in GiB (physical pages; a container's limit may be lower)."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30


def load_average() -> float:
    """The 1-minute load average now (runnable threads, the benchmark's own included)."""
    return os.getloadavg()[0]


def process_tree_cpu(pid: int | None) -> float:
    """CPU seconds (user + system) of a process and its descendants, from /proc (Linux)."""
    if pid is None or not Path("/proc").is_dir():
        return float("nan")
    tick = os.sysconf("SC_CLK_TCK")
    parent, seconds = {}, {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:  # after "(comm)": state ppid ... utime (12th) stime (13th)
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        parent[int(entry.name)] = int(fields[1])
        seconds[int(entry.name)] = (int(fields[11]) + int(fields[12])) / tick
    tree, grew = {pid}, True
    while grew:
        children = {p for p, pp in parent.items() if pp in tree} - tree
        tree, grew = tree | children, bool(children)
    return sum(seconds.get(p, 0.0) for p in tree)


def cpu_snapshot(running: tuple[int, ...] = ()) -> dict[str, float]:
    """CPU seconds so far: the machine's busy and stolen time, and the benchmark's own.

    "own" counts this process, the children it has waited for (os.times) and the process
    trees of the `running` pids (its servers), so between two snapshots busy - own is what
    everyone else ran.
    """
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    tick = os.sysconf("SC_CLK_TCK")
    t = os.times()
    return {
        "wall": time.monotonic(),
        "busy": (user + nice + system + irq + softirq) / tick,
        "steal": steal / tick,
        "own": t.user
        + t.system
        + t.children_user
        + t.children_system
        + sum(process_tree_cpu(pid) for pid in running),
    }


def others_cores(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Cores that other processes (and, as steal, other virtual machines) used in between."""
    wall = after["wall"] - before["wall"]
    busy, own = after["busy"] - before["busy"], after["own"] - before["own"]
    return {
        "others_cores": max(0.0, busy - own) / wall,
        "steal_cores": (after["steal"] - before["steal"]) / wall,
    }


def identity(
    threads: dict[str, Any] | None = None, packages: tuple[str, ...] = PACKAGES
) -> dict[str, Any]:
    """The record a figure is stored with; `threads` names each library's thread count."""
    cpu = lscpu()
    flags = set(cpu.get("Flags", "").split())
    env_threads = {k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS",
                   "OPENBLAS_NUM_THREADS") if k in os.environ}  # fmt: skip
    return {
        "cpu": cpu.get("Model name", "unknown"),
        "cpu_id": "family {}, model {}, stepping {}".format(
            *(cpu.get(k, "?") for k in ("CPU family", "Model", "Stepping"))
        ),
        "simd_flags": [f for f in SIMD_FLAGS if f in flags],
        "hypervisor": cpu.get("Hypervisor vendor", "none"),
        "cores": len(os.sched_getaffinity(0)),
        "memory_gib": memory_gib(),
        "threads": dict(threads or {}) | env_threads,
        "versions": versions(packages),
        "commit": commit(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "load_average": load_average(),
    }


def describe(ident: dict[str, Any]) -> str:
    """One paragraph for the top of a results table (markdown)."""
    v = ident["versions"]
    threads = ", ".join(f"{k} {t}" for k, t in ident["threads"].items()) or "library defaults"
    software = ", ".join(f"{k} {version}" for k, version in v.items())
    return (
        f"Machine: {ident['cpu']} ({ident['cpu_id']}; {ident['cores']} cores usable, "
        f"{ident['memory_gib']:.0f} GiB memory, hypervisor {ident['hypervisor']}; flags {' '.join(ident['simd_flags']) or 'none of interest'}). "
        f"{software}; threads: {threads}. Commit {ident['commit']}, {ident['date']}, "
        f"1-minute load average {ident['load_average']:.2f} at the start."
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--packages", help="comma-separated distributions whose versions to give")
    p.add_argument("--json", action="store_true", help="print the identity as JSON only")
    args = p.parse_args()
    packages = tuple(args.packages.split(",")) if args.packages else PACKAGES
    ident = identity(packages=packages)
    print(json.dumps(ident, indent=2) if args.json else describe(ident))


if __name__ == "__main__":
    main()
