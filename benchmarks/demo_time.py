"""A preset's whole training time against the demo's, both measured at once.

Issue 12 asks the tiny presets to reach their quality target "in the demo's time": the
demo trains cyclegan-tiny for its 1,200 steps on day2dusk. A ratio of two times taken in
different windows measures the load as much as the presets, so each preset here trains
*beside* the demo: two `i2i-train` processes start together (one thread each, the
preset's own data loader settings), each for --steps steps, and each one's seconds per
step are read from its losses.jsonl over the window in which both were running. The
preset's whole run is its total steps at that rate; "x demo" is that over the demo's
1,200 steps at the demo's rate in the same window.

    i2i data sample --task day2dusk --out D; i2i data sample --task gradings --out G
    python benchmarks/demo_time.py --data D --gradings G \\
        --presets discogan-tiny,dualgan-tiny,unit-tiny,cogan-tiny,munit-tiny,stargan-tiny

Multi-domain presets (stargan-tiny, twostep-tiny) train on --gradings, the others on --data. A
preset's total steps come from its schedule and the size of its training set, as
i2i-train counts them (or from its max_steps). A two-step plan with encoder steps (two
phases of different cost) is not one rate and is refused; without them (twostep-tiny, whose
encoder learns in step 1) it is measured like the others.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from machine import describe, identity, load_average

DEMO = "cyclegan-tiny"


def total_steps(preset: str, data: Path, overrides: list[str]) -> int:
    """The steps i2i-train runs for `preset` on `data`: its epochs times its batches."""
    from i2i.models import get_family
    from i2i.training.config import apply_overrides, load_config

    cfg = apply_overrides(load_config(preset), overrides)
    if cfg.family == "twostep" and cfg.loss.get("encoder_steps", 20_000):
        raise SystemExit(
            f"{preset}: a two-step run with encoder steps has two phases of different cost; "
            "only a plan without them (loss.encoder_steps: 0) is one rate measured here"
        )
    if get_family(cfg.family).multi_domain:
        n_items = sum(1 for _ in (data / "train").glob("*/*.png"))
    else:
        n_items = max(len(list((data / f"train{d}").glob("*.png"))) for d in "AB")
    if not n_items:
        raise SystemExit(f"{data}: no training images (make it with `i2i data sample`)")
    steps = math.ceil(n_items / cfg.batch_size) * (cfg.n_epochs + cfg.n_epochs_decay)
    return min(steps, cfg.max_steps) if cfg.max_steps else steps


def start(preset: str, data: Path, out: Path, steps: int, overrides: list[str]) -> Any:
    cmd = [
        sys.executable, "-m", "i2i.cli", "train", "--config", preset, "--data", str(data),
        "--out", str(out), "--no-progress", "--max-steps", str(steps),
        "--set", "log_every=10", "--set", f"save_every={steps}", "--set", f"sample_every={steps}",
    ]  # fmt: skip
    for item in overrides:
        cmd += ["--set", item]
    env = os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def log_times(run: Path) -> list[tuple[int, float]]:
    """(step, wall time) of every line of a run's losses.jsonl."""
    from i2i.training.monitor import read_loss_log

    return [(int(r["step"]), float(r["time"])) for r in read_loss_log(run / "losses.jsonl")]


def rate_in(times: list[tuple[int, float]], lo: float, hi: float) -> float:
    """Seconds per step between the first and last logged step inside [lo, hi]."""
    inside = [(s, t) for s, t in times if lo <= t <= hi]
    if len(inside) < 2:
        raise SystemExit("the two runs overlapped too little: use more --steps")
    (s0, t0), (s1, t1) = inside[0], inside[-1]
    return (t1 - t0) / (s1 - s0)


def pair(
    preset: str, data: tuple[Path, Path], steps: int, overrides: list[str], root: Path
) -> dict[str, Any]:
    """Train `preset` (on data[0]) and the demo (on data[1]) at once; their rates over the
    window in which both ran."""
    runs = {name: root / f"{preset}-{name}" for name in ("preset", "demo")}
    load_before = load_average()
    procs = {
        "preset": start(preset, data[0], runs["preset"], steps, overrides),
        "demo": start(DEMO, data[1], runs["demo"], steps, []),
    }
    for name, proc in procs.items():
        _, err = proc.communicate()
        if proc.returncode:
            raise SystemExit(f"{name} run of {preset} failed:\n{err.decode()[-2000:]}")
    times = {name: log_times(run) for name, run in runs.items()}
    lo = max(t[0][1] for t in times.values())
    hi = min(t[-1][1] for t in times.values())
    rates = {name: rate_in(t, lo, hi) for name, t in times.items()}
    preset_steps = total_steps(preset, data[0], overrides)
    demo_steps = total_steps(DEMO, data[1], [])
    return {
        "preset": preset,
        "overrides": overrides,
        "steps": preset_steps,
        "s_per_it": rates["preset"],
        "demo_steps": demo_steps,
        "demo_s_per_it": rates["demo"],
        "x_demo": preset_steps * rates["preset"] / (demo_steps * rates["demo"]),
        "window_s": hi - lo,
        "load_average": [load_before, load_average()],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, required=True, help="the day2dusk sample")
    parser.add_argument("--gradings", type=Path, help="the gradings sample (multi-domain presets)")
    parser.add_argument("--presets", required=True, help="comma-separated preset names")
    parser.add_argument("--steps", type=int, default=300, help="steps of each run (default 300)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="an override for the presets (not the demo), as i2i-train's --set",
    )  # fmt: skip
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    if args.steps < 20:
        parser.error("--steps must be at least 20 (the rate comes from the logged steps)")
    from i2i.models import get_family
    from i2i.training.config import load_config

    ident = identity({"OMP_NUM_THREADS": 1})
    print(describe(ident))
    print()
    print(f"Each preset beside {DEMO} (the demo), {args.steps} steps each, both at once.")
    print()
    print("| preset (its steps) | its s/it | demo s/it | x demo | window | load |")
    print("|---|---:|---:|---:|---:|---|")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for preset in args.presets.split(","):
            multi = get_family(load_config(preset).family).multi_domain
            if multi and args.gradings is None:
                parser.error(f"{preset} is multi-domain: pass --gradings")
            data = (args.gradings if multi else args.data, args.data)
            row = pair(preset, data, args.steps, args.set, Path(tmp))
            rows.append(row)
            load = "–".join(f"{x:.1f}" for x in row["load_average"])
            print(
                f"| {preset} ({row['steps']:,}) | {row['s_per_it']:.4f} | "
                f"{row['demo_s_per_it']:.4f} | **{row['x_demo']:.2f}** | "
                f"{row['window_s']:.0f} s | {load} |",
                flush=True,
            )
            time.sleep(1)
    if args.json:
        args.json.write_text(json.dumps({"identity": ident, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
