"""The container's command, run without Docker, and the health probe its HEALTHCHECK runs.

The Dockerfile's final stage is read (ENV, ENTRYPOINT, CMD, HEALTHCHECK, STOPSIGNAL) and run
here as a process, with only the container's paths and ports swapped for local ones: the
model repository (/models) for a real tiny repository, the venv (/opt/venv) for this one, and
ports 8001 and 8002 for free ports (through the same I2I_SERVE_* variables), and PyTorch
hidden, as the image does not hold it. Then its own
HEALTHCHECK must pass, a Translate must answer, /metrics must answer, the STOPSIGNAL must
end it with status 0, and the HEALTHCHECK must fail once it is gone.

The probe (`python -m i2i.client.probe`) is also tested on its own against in-process i2i
servers: every status, TLS, usage errors and its imports.
"""

from __future__ import annotations

import ast
import io
import json
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from grpc_health.v1 import health_pb2
from PIL import Image

from i2i.client import Client, probe
from tests.conftest import without_training_packages
from tests.deploy import load, variables_at
from tests.serving.conftest import MODEL, png_bytes, sample_image

VENV = Path(sys.prefix)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def local_command(words: list[str]) -> list[str]:
    """A container command for this machine: `python` is this interpreter, scripts this venv's."""
    first = words[0]
    if Path(first).name.startswith("python"):
        return [sys.executable, *words[1:]]
    if "/" not in first or first.startswith("/opt/venv/"):
        return [str(VENV / "bin" / Path(first).name), *words[1:]]
    return words


class Container:
    """The final stage's ENTRYPOINT + CMD as a process, with its ENV (paths and ports swapped)."""

    def __init__(self, repository: Path, home: Path) -> None:
        dockerfile = load()
        stage = dockerfile.final
        base = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(home)}
        _, env = variables_at(dockerfile, stage, base_env=base)
        assert env["I2I_SERVE_REPOSITORY"] == "/models"
        self.port, self.metrics_port = free_port(), free_port()
        env = {key: value.replace("/opt/venv", str(VENV)) for key, value in env.items()}
        env.update(
            I2I_SERVE_REPOSITORY=str(repository),
            I2I_SERVE_PORT=str(self.port),
            I2I_SERVE_METRICS_PORT=str(self.metrics_port),
        )
        # The image holds no PyTorch (nor the other training packages): hide this venv's.
        env["PYTHONPATH"] = without_training_packages(home / "no-torch")["PYTHONPATH"]
        self.env = env
        cmd = stage.all("CMD")
        self.argv = local_command(
            stage.last("ENTRYPOINT").exec_form() + (cmd[-1].exec_form() if cmd else [])
        )
        healthcheck = stage.last("HEALTHCHECK").value.partition(" CMD ")[2]
        self.healthcheck = local_command(json.loads(healthcheck))
        self.stop_signal = signal.Signals[stage.last("STOPSIGNAL").value]
        self.log: list[str] = []
        self.process = subprocess.Popen(
            self.argv, env=env, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.log.append(line)

    def check_health(self) -> subprocess.CompletedProcess[str]:
        """The HEALTHCHECK command as Docker would run it inside the container."""
        return subprocess.run(
            self.healthcheck, env=self.env, capture_output=True, text=True, timeout=30
        )

    def wait_healthy(self, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        deadline = time.monotonic() + timeout
        while True:
            result = self.check_health()
            if result.returncode == 0:
                return result
            assert self.process.poll() is None, "the server exited:\n" + "".join(self.log[-30:])
            assert time.monotonic() < deadline, "never healthy:\n" + "".join(self.log[-30:])
            time.sleep(0.5)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


@pytest.fixture
def container(tiny_repository: Path, tmp_path: Path) -> Iterator[Container]:
    running = Container(tiny_repository, tmp_path)
    yield running
    running.close()


@pytest.mark.slow
def test_container_command_serves_health_translate_metrics_and_stops(container):
    assert container.argv[0] == str(VENV / "bin" / "i2i-serve")
    assert container.healthcheck[:3] == [sys.executable, "-m", "i2i.client.probe"]
    healthy = container.wait_healthy()
    assert healthy.stdout.strip() == "SERVING"

    pixels = sample_image(32, 48)
    with Client(f"127.0.0.1:{container.port}", timeout=30) as client:
        result = client.translate(png_bytes(pixels), model=MODEL, direction="A2B")
    translated = np.asarray(Image.open(io.BytesIO(result.images[0])))
    assert translated.shape == (32, 48, 3) and translated.dtype == np.uint8

    url = f"http://127.0.0.1:{container.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as reply:
        metrics = reply.read().decode()
    assert reply.status == 200
    assert "i2i_server_ready 1.0" in metrics
    assert 'i2i_inference_requests_total{code="OK",direction="A2B",model="tiny"} 1.0' in metrics

    # I2I_SERVE_LOG_FORMAT=json: the server's own lines are JSON objects.
    records = [json.loads(line) for line in container.log if line.startswith("{")]
    assert any("listening on" in r["message"] for r in records)
    assert any(r["message"].startswith("SERVING tiny:1 A2B") for r in records)

    container.process.send_signal(container.stop_signal)
    assert container.process.wait(60) == 0, "".join(container.log[-30:])
    after = container.check_health()
    assert after.returncode == 1 and "unhealthy" in after.stderr


# ---- the probe on its own --------------------------------------------------------------------


def run_probe(capsys, *argv: str, environ: dict[str, str] | None = None) -> tuple[int, str, str]:
    try:
        code = probe.main(list(argv), environ={} if environ is None else environ)
    except SystemExit as exit:  # argparse's usage errors
        code = int(exit.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_probe_statuses_against_a_real_server(start_server, capsys):
    server = start_server()
    port = server.target.rsplit(":", 1)[1]
    assert run_probe(capsys, "--server", server.target) == (0, "SERVING\n", "")
    # No --server: 127.0.0.1 and I2I_SERVE_PORT, as in the container (I2I_SERVE_HOST 0.0.0.0).
    environ = {"I2I_SERVE_PORT": port, "I2I_SERVE_HOST": "0.0.0.0"}
    assert run_probe(capsys, environ=environ)[:2] == (0, "SERVING\n")
    assert run_probe(capsys, "--server", server.target, "--service", "i2i.v1.Translator")[0] == 0

    code, _, err = run_probe(capsys, "--server", server.target, "--service", "no.such.Service")
    assert code == 1 and "NOT_FOUND" in err and "no.such.Service" in err

    not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
    server.call(server.server.health.set("", not_serving))
    code, out, err = run_probe(capsys, "--server", server.target)
    assert (code, out) == (1, "NOT_SERVING\n") and "reports NOT_SERVING" in err

    closed = f"127.0.0.1:{free_port()}"
    code, out, err = run_probe(capsys, "--server", closed, "--timeout", "2")
    assert (code, out) == (1, "") and err.startswith(f"{closed}: unhealthy: UNAVAILABLE")


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")
def test_probe_over_tls(start_server, certificates, capsys):
    server = start_server(tls_cert=certificates / "server.pem", tls_key=certificates / "server.key")
    ca = str(certificates / "ca.pem")
    assert run_probe(capsys, "--server", server.target, "--tls-ca", ca)[0] == 0
    localhost = ("--tls-server-name", "localhost")
    assert run_probe(capsys, "--server", server.target, "--tls-ca", ca, *localhost)[0] == 0
    wrong = ("--tls-server-name", "elsewhere.example")
    assert run_probe(capsys, "--server", server.target, "--tls-ca", ca, *wrong)[0] == 1
    assert run_probe(capsys, "--server", server.target, "--timeout", "2")[0] == 1  # plaintext


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--timeout", "0"], "--timeout must be more than 0"),
        (["--server", "localhost"], "give HOST:PORT"),
        (["--tls-ca", "/no/such/ca.pem"], "cannot read it"),
        (["--tls-server-name", "x"], "need --tls-ca"),
        (["--tls-ca", "ca.pem", "--tls-cert", "c.pem"], "go together"),
        (["--no-such-flag"], "unrecognized arguments"),
    ],
)
def test_probe_usage_errors_exit_2(capsys, argv, message):
    code, out, err = run_probe(capsys, *argv)
    assert (code, out) == (2, "") and message in err


def test_probe_default_server():
    assert probe.default_server({}) == "127.0.0.1:8001"
    assert probe.default_server({"I2I_SERVE_PORT": "9001"}) == "127.0.0.1:9001"
    assert probe.default_server({"I2I_SERVE_HOST": "::"}) == "127.0.0.1:8001"
    assert probe.default_server({"I2I_SERVE_HOST": "10.1.2.3"}) == "10.1.2.3:8001"
    assert probe.default_server({"I2I_SERVE_HOST": "fd00::5"}) == "[fd00::5]:8001"


def test_probe_imports_only_grpc_and_the_standard_library():
    tree = ast.parse(Path(probe.__file__).read_text())
    modules = {
        (node.module if isinstance(node, ast.ImportFrom) else alias.name).split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert modules - sys.stdlib_module_names <= {"grpc", "grpc_health"}, modules


def test_probe_loads_neither_numpy_nor_torch():
    """The health check runs every few seconds: it must start fast (grpc only)."""
    code = (
        "import sys, runpy; sys.argv = ['probe', '--help']\n"
        "try:\n    runpy.run_module('i2i.client.probe', run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        "print(sorted(m for m in ('numpy', 'torch', 'PIL') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
