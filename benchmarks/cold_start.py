"""Cold start of `i2i-serve`: launch to health SERVING, memory, and where the time goes.

    python benchmarks/cold_start.py                        # ResNet-9, 64 filters, 3 runs each
    python benchmarks/cold_start.py --runs 5 --out cold.json
    python benchmarks/cold_start.py --repository REPO      # an existing repository instead

A seeded, untrained CycleGAN generator (ResNet-9, ``--ngf 64``: the usual CycleGAN size) is
exported to FP32 ONNX through i2i's own export into a temporary repository, unless
``--repository`` names one. Then, for each setting (interleaved: run 1 of every setting,
then run 2, ... so a change in the machine's load hits every setting alike), `i2i-serve`
starts as a child process on the CPU and is polled with grpc.health.v1 Check every 20 ms;
recorded per run:

- launch -> first log line (imports, argument parsing) and -> "listening on" (port bound);
- launch -> health SERVING (the readiness a Kubernetes probe sees), with each direction's
  load and warm-up seconds from the server's log;
- RSS at SERVING and peak RSS until then (VmRSS, VmHWM of /proc/<pid>/status);
- the latency of the first and second Translate of one ``--size``² raw image after SERVING
  (where a smaller warm-up's savings could reappear) and the peak RSS after them;
- the 1-minute load average before and after (other processes on a shared machine).

``--parts`` adds an in-process breakdown of one direction's load: `python -X importtime
-c 'import i2i.serving.server'` (cumulative times of the heaviest packages), the artifact's
sha256, ONNX Runtime session creation with ORT_ENABLE_ALL against loading a pre-optimised
copy (``SessionOptions.optimized_model_filepath``), and single runs at 64² and ``--size``².
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from exported import export_untrained
from machine import describe, identity, load_average

SETTINGS: dict[str, list[str]] = {
    "old default (--warmup full)": ["--warmup", "full"],
    "new default (auto: minimal on CPU)": [],
    "--warmup full --warmup-size 64": ["--warmup", "full", "--warmup-size", "64"],
}
LOADED = re.compile(r"loaded (\S+ \S+) with .* in ([\d.]+) s, of which (.*): ([\d.]+) s")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def memory_kb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a process, in KiB."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0])
    return found


def one_start(
    repository: Path, flags: list[str], args: argparse.Namespace, timeout: float = 600
) -> dict[str, Any]:
    """Launch i2i-serve once, poll health until SERVING, measure, send two requests, stop."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from i2i.v1 import translator_pb2 as pb
    from i2i.v1 import translator_pb2_grpc as pb_grpc

    port = free_port()
    command = [
        sys.executable, "-m", "i2i.serving", "--repository", str(repository),
        "--host", "127.0.0.1", "--port", str(port), "--metrics-port", "-1",
        "--backend", "onnxruntime-cpu", "--max-batch", str(args.max_batch),
        "--log-level", "INFO", *flags,
    ]  # fmt: skip
    lines: list[tuple[float, str]] = []
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    before = load_average()
    launched = time.monotonic()
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env)

    def read() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            lines.append((time.monotonic() - launched, line.rstrip()))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    # Short reconnect backoff: gRPC's default (1 s, growing) would add up to seconds of wait
    # between the port opening and the next poll.
    options = [
        ("grpc.initial_reconnect_backoff_ms", 20),
        ("grpc.min_reconnect_backoff_ms", 20),
        ("grpc.max_reconnect_backoff_ms", 50),
    ]
    channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=options)
    health = health_pb2_grpc.HealthStub(channel)
    serving_s = None
    try:
        while time.monotonic() - launched < timeout and process.poll() is None:
            try:
                status = health.Check(health_pb2.HealthCheckRequest(), timeout=1).status
            except grpc.RpcError:
                status = None
            if status == health_pb2.HealthCheckResponse.SERVING:
                serving_s = time.monotonic() - launched
                break
            time.sleep(0.02)
        if serving_s is None:
            tail = "\n".join(line for _, line in lines[-30:])
            raise RuntimeError(f"i2i-serve did not reach SERVING ({flags}); log:\n{tail}")
        at_serving = memory_kb(process.pid)
        pixels = np.random.default_rng(0).integers(0, 256, (args.size, args.size, 3), np.uint8)
        raw = pb.RawImage(pixels=pixels.tobytes(), height=args.size, width=args.size, channels=3)
        request = pb.TranslateRequest(
            model=args.model,
            direction="A2B",
            image=pb.Image(raw=raw),
            output=pb.OutputOptions(format=pb.IMAGE_FORMAT_RAW),
        )
        stub = pb_grpc.TranslatorStub(channel)
        requests_ms = []
        for _ in range(2):
            start = time.perf_counter()
            stub.Translate(request, timeout=300)
            requests_ms.append((time.perf_counter() - start) * 1e3)
        after_requests = memory_kb(process.pid)
    finally:
        channel.close()
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        reader.join(10)
    listening = next((t for t, line in lines if "listening on" in line), None)
    loaded = [m.groups() for _, line in lines if (m := LOADED.search(line))]
    return {
        "first_log_line_s": lines[0][0] if lines else None,
        "listening_s": listening,
        "serving_s": serving_s,
        "directions": [
            {
                "direction": d,
                "load_s": float(total) - float(w),
                "warmup": what,
                "warmup_s": float(w),
            }
            for d, total, what, w in loaded
        ],
        "rss_at_serving_mb": at_serving["VmRSS"] / 1024,
        "peak_rss_at_serving_mb": at_serving["VmHWM"] / 1024,
        "first_request_ms": requests_ms[0],
        "second_request_ms": requests_ms[1],
        "peak_rss_after_requests_mb": after_requests["VmHWM"] / 1024,
        "load_before": before,
        "load_after": load_average(),
    }


def import_times() -> dict[str, float]:
    """Cumulative import seconds of the server module and its heaviest dependencies."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import i2i.serving.server"],
        capture_output=True,
        text=True,
        check=True,
    )
    wanted = ("i2i.serving.server", "torch", "onnxruntime", "grpc", "numpy", "PIL")
    found = {}
    for line in done.stderr.splitlines():  # "import time: self [us] | cumulative | name"
        parts = [p.strip() for p in line.removeprefix("import time:").split("|")]
        if len(parts) == 3 and parts[2] in wanted and parts[1].isdigit():
            found[parts[2]] = int(parts[1]) / 1e6
    return found


def parts(repository: Path, model: str, size: int) -> dict[str, Any]:
    """One direction's load, step by step, in this process (see the module docstring)."""
    import onnxruntime as ort

    from i2i.repository import read_manifest, sha256_file, version_folder

    manifest = read_manifest(repository, model)
    artifact = next(a for a in manifest["artifacts"] if a["direction"] == "A2B")
    path = version_folder(repository, model, manifest["version"]) / artifact["file"]
    result: dict[str, Any] = {
        "imports_s": import_times(),
        "artifact_mb": path.stat().st_size / 2**20,
    }
    start = time.perf_counter()
    sha256_file(path)
    result["sha256_s"] = time.perf_counter() - start

    def session(file: Path, level: Any, save: Path | None = None) -> tuple[Any, float]:
        options = ort.SessionOptions()
        options.graph_optimization_level = level
        if save is not None:
            options.optimized_model_filepath = str(save)
        start = time.perf_counter()
        made = ort.InferenceSession(str(file), options, providers=["CPUExecutionProvider"])
        return made, time.perf_counter() - start

    with tempfile.TemporaryDirectory() as tmp:
        optimised = Path(tmp) / "optimised.onnx"
        session(path, ort.GraphOptimizationLevel.ORT_ENABLE_ALL)  # ORT's one-time set-up
        full = [session(path, ort.GraphOptimizationLevel.ORT_ENABLE_ALL)[1] for _ in range(3)]
        saving = session(path, ort.GraphOptimizationLevel.ORT_ENABLE_ALL, optimised)[1]
        cached = [
            session(optimised, ort.GraphOptimizationLevel.ORT_DISABLE_ALL)[1] for _ in range(3)
        ]
    result["session_enable_all_s"] = statistics.median(full)
    result["session_saving_optimised_s"] = saving
    result["session_from_optimised_s"] = statistics.median(cached)
    runner, _ = session(path, ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    runs = []
    for side, batch in ((64, 1), (64, 1), (size, 1), (size, 1)):
        images = np.zeros((batch, side, side, 3), np.uint8)
        start = time.perf_counter()
        runner.run(None, {artifact_input(manifest): images})
        runs.append({"size": side, "batch": batch, "s": time.perf_counter() - start})
    result["runs"] = runs
    return result


def artifact_input(manifest: dict[str, Any]) -> str:
    return str(manifest["directions"]["A2B"]["input"]["name"])


def spread(values: list[float], fmt: str) -> str:
    """Median (min-max)."""
    return f"{statistics.median(values):{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})"


def markdown(results: dict[str, Any]) -> str:
    m, s = results["machine"], results["settings"]
    lines = [
        describe(m),
        "",
        f"Command: `{results['command']}`",
        "",
        f"CycleGAN {s['net']}, ngf {s['ngf']}, "
        f"2 directions (FP32 ONNX, {s['artifact_mb']:.1f} MB each), --backend onnxruntime-cpu, "
        f"--max-batch {s['max_batch']}; {s['runs']} runs per setting, interleaved; median "
        f"(min-max). First/second request: one {s['size']}x{s['size']} raw image after SERVING.",
        "",
        "| setting | launch -> SERVING s | launch -> listening s | warm-up s (both directions) "
        "| RSS at SERVING MB | peak RSS at SERVING MB | first request ms | second request ms "
        "| peak RSS after requests MB | load avg (1 min) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, runs in results["runs"].items():
        loads = [r["load_before"] for r in runs] + [r["load_after"] for r in runs]
        warm = [sum(d["warmup_s"] for d in r["directions"]) for r in runs]
        lines.append(
            f"| {name} | {spread([r['serving_s'] for r in runs], '.1f')} "
            f"| {spread([r['listening_s'] for r in runs], '.1f')} | {spread(warm, '.1f')} "
            f"| {spread([r['rss_at_serving_mb'] for r in runs], '.0f')} "
            f"| {spread([r['peak_rss_at_serving_mb'] for r in runs], '.0f')} "
            f"| {spread([r['first_request_ms'] for r in runs], '.0f')} "
            f"| {spread([r['second_request_ms'] for r in runs], '.0f')} "
            f"| {spread([r['peak_rss_after_requests_mb'] for r in runs], '.0f')} "
            f"| {min(loads):.1f}-{max(loads):.1f} |"
        )
    if "parts" in results:
        p = results["parts"]
        imports = ", ".join(f"{k} {v:.2f} s" for k, v in p["imports_s"].items())
        runs = ", ".join(f"{r['size']}² {r['s'] * 1e3:.0f} ms" for r in p["runs"])
        lines += [
            "",
            f"One direction in-process: imports (cumulative, -X importtime) {imports}; sha256 "
            f"of {p['artifact_mb']:.1f} MB {p['sha256_s'] * 1e3:.0f} ms; ONNX Runtime session "
            f"with ORT_ENABLE_ALL {p['session_enable_all_s'] * 1e3:.0f} ms, saving the "
            f"optimised model {p['session_saving_optimised_s'] * 1e3:.0f} ms, from the saved "
            f"optimised model {p['session_from_optimised_s'] * 1e3:.0f} ms; runs (batch 1) "
            f"in order: {runs}.",
        ]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--repository", type=Path, help="an existing repository (default: export one)")
    p.add_argument("--model", default="cold", help="its model name (default cold)")
    p.add_argument("--ngf", type=int, default=64, help="generator filters (default 64)")
    p.add_argument("--net", default="resnet_9blocks", help="generator (default resnet_9blocks)")
    p.add_argument("--runs", type=int, default=3, help="starts per setting (default 3)")
    p.add_argument("--max-batch", type=int, default=8, help="i2i-serve --max-batch (default 8)")
    p.add_argument("--size", type=int, default=256, help="side of the request image (256)")
    p.add_argument("--parts", action="store_true", help="add the in-process load breakdown")
    p.add_argument("--out", type=Path, help="also write the results here as JSON")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="i2i-cold-") as tmp:
        repository = args.repository
        if repository is None:
            print(f"exporting CycleGAN {args.net} ngf {args.ngf} ...", file=sys.stderr)
            repository = export_untrained(Path(tmp), "cold", ngf=args.ngf, ndf=8, net=args.net)
            args.model = "cold"
        from i2i.repository import read_manifest, version_folder

        manifest = read_manifest(repository, args.model)
        folder = version_folder(repository, args.model, manifest["version"])
        artifact_mb = (folder / manifest["artifacts"][0]["file"]).stat().st_size / 2**20
        results: dict[str, Any] = {
            "machine": identity(),
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "settings": {
                "net": args.net,
                "ngf": args.ngf,
                "max_batch": args.max_batch,
                "size": args.size,
                "runs": args.runs,
                "artifact_mb": artifact_mb,
            },
            "runs": {name: [] for name in SETTINGS},
        }
        for run in range(args.runs):
            for name, flags in SETTINGS.items():
                result = one_start(repository, flags, args)
                results["runs"][name].append(result)
                print(f"run {run + 1} {name}: {json.dumps(result)}", file=sys.stderr)
        if args.parts:
            results["parts"] = parts(repository, args.model, args.size)
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))
    print(markdown(results))


if __name__ == "__main__":
    main()
