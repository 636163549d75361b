"""`i2i-serve` settings: flags, I2I_SERVE_* environment defaults, and refusals that name the flag."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from i2i.serving.config import (
    ModelSelection,
    ServerConfig,
    ServerConfigError,
    add_arguments,
    config_from_args,
)


def parse(argv: list[str], environ: dict[str, str] | None = None) -> ServerConfig:
    parser = argparse.ArgumentParser()
    add_arguments(parser, environ or {})
    return config_from_args(parser.parse_args(argv))


def test_flags():
    config = parse(["--repository", "r", "--model", "a", "--model", "b:3", "--max-batch", "16",
                    "--metrics-port", "-1", "--max-delay-ms", "0",
                    "--max-connection-age-s", "300"])  # fmt: skip
    assert config.repository == Path("r")
    assert config.models == (ModelSelection("a"), ModelSelection("b", 3))
    assert (config.max_batch, config.metrics_port, config.max_delay_ms) == (16, None, 0.0)
    assert config.max_connection_age_s == 300.0


def test_environment_sets_defaults_and_flags_win():
    environ = {
        "I2I_SERVE_REPOSITORY": "/models",
        "I2I_SERVE_MAX_BATCH": "12",
        "I2I_SERVE_MODEL": "day2dusk, night:2",
        "I2I_SERVE_BACKEND": "onnxruntime-cpu",
        "I2I_SERVE_TOKEN": "t0ken",
    }
    config = parse([], environ)
    assert config.repository == Path("/models") and config.max_batch == 12
    assert config.models == (ModelSelection("day2dusk"), ModelSelection("night", 2))
    assert config.backend == "onnxruntime-cpu"
    assert parse(["--max-batch", "2"], environ).max_batch == 2


def test_environment_token(monkeypatch, tmp_path):
    monkeypatch.setenv("I2I_SERVE_TOKEN", " s3cret\n")
    assert parse(["--repository", "r"]).token == "s3cret"
    (tmp_path / "token").write_text("from-file\n")
    assert (
        parse(["--repository", "r", "--token-file", str(tmp_path / "token")]).token == "from-file"
    )


def test_metrics_bind_the_grpc_host_unless_told_otherwise():
    assert parse(["--repository", "r", "--host", "127.0.0.1"]).metrics_address == "127.0.0.1"
    assert parse(["--repository", "r"]).metrics_address == "0.0.0.0"  # the default --host
    config = parse(["--repository", "r", "--host", "127.0.0.1", "--metrics-host", "0.0.0.0"])
    assert config.metrics_address == "0.0.0.0"
    environ = {"I2I_SERVE_REPOSITORY": "r", "I2I_SERVE_HOST": "::1"}
    assert parse([], environ).metrics_address == "::1"


def test_batch_pixels_and_drain_delay_flags():
    config = parse(["--repository", "r", "--max-batch-pixels", "0", "--drain-delay-s", "1.5"])
    assert (config.max_batch_pixels, config.drain_delay_s) == (0, 1.5)
    environ = {
        "I2I_SERVE_REPOSITORY": "r",
        "I2I_SERVE_MAX_BATCH_PIXELS": "1048576",
        "I2I_SERVE_DRAIN_DELAY_S": "2",
    }
    config = parse([], environ)
    assert (config.max_batch_pixels, config.drain_delay_s) == (1 << 20, 2.0)


def test_bad_values_are_refused_with_the_flag_named(capsys):
    with pytest.raises(SystemExit) as caught:
        parse([], {"I2I_SERVE_REPOSITORY": "r", "I2I_SERVE_MAX_BATCH": "lots"})
    assert caught.value.code == 2 and "--max-batch" in capsys.readouterr().err
    cases = {
        ("--max-queue", "0"): "--max-queue must be at least 1",
        ("--tls-cert", __file__): "--tls-cert and --tls-key go together",
        ("--log-level", "LOUD"): "--log-level",
        ("--model", "m:zero"): "NAME:VERSION",
        ("--max-batch-pixels", "-1"): "--max-batch-pixels must be >= 0",
        ("--drain-delay-s", "-2"): "--drain-delay-s must be >= 0",
    }
    for flag, words in cases.items():
        with pytest.raises(ServerConfigError, match=words):
            parse(["--repository", "r", *flag])
    with pytest.raises(ServerConfigError, match="no such file"):
        parse(["--repository", "r", "--tls-cert", "missing.pem", "--tls-key", "missing.key"])


def test_backend_and_precision_choices_match_the_backends():
    # config.py keeps its own copy so that building the CLI parser does not import torch.
    from i2i.serving.backends import BACKEND_CHOICES, PRECISION_CHOICES
    from i2i.serving.config import BACKENDS, PRECISIONS

    assert (BACKENDS, PRECISIONS) == (BACKEND_CHOICES, PRECISION_CHOICES)
