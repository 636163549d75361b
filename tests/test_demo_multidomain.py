"""`i2i demo` of a multi-domain family: the gradings task, training, per-pair eval, export,
serving and translation into every other domain, on the test-only toy family."""

from __future__ import annotations

import json
import os

import pytest

from i2i.cli.demo import run_demo
from i2i.training import ConfigError, loop
from tests.toy_multidomain import NAME, registered

TOY_PRESET = """\
family: toy-md
model:
  ngf: 4
data:
  preprocess: crop
  load_size: 64
  crop_size: 64
  num_workers: 0
batch_size: 4
max_steps: 4
lr: 0.001
progress: false
tensorboard: false
"""


# Exporting the fused to_<domain> translators needs DomainTranslator's eager-only index check
# (models/translators.py, fixed on the serving and family branches); slow like the other demos.
@pytest.mark.slow
def test_demo_of_a_multi_domain_family(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(loop.TRAINERS, NAME, "tests.toy_multidomain:ToyTrainer")
    preset = tmp_path / "toy-md-tiny.yaml"
    preset.write_text(TOY_PRESET)
    out = tmp_path / "demo"
    with registered():
        report = run_demo(out=out, family=NAME, config=preset)
    printed = capsys.readouterr().out
    info = json.loads((out / "data" / "dataset.json").read_text())
    assert info["task"] == "gradings" and info["layout"] == "labelled"
    domains = info["domains"]
    assert report["domains"] == domains and len(report["pairs"]) == 12
    assert "day -> sepia" in printed and "mean of 12 pairs" in printed
    assert "family metrics" in printed
    # The first domain's test images came back through i2i-serve in every other domain.
    tests = sorted(os.listdir(out / "data" / "test" / domains[0]))
    assert sorted(os.listdir(out / "translated")) == [f"to_{d}" for d in domains[1:]]
    for direction in os.listdir(out / "translated"):
        assert sorted(os.listdir(out / "translated" / direction)) == tests
    assert "latency seen by the client: median" in printed
    manifest = next((out / "models").rglob("manifest.json"))
    assert json.loads(manifest.read_text())["domains"] == domains


def test_a_family_without_its_tiny_preset_fails_before_writing(tmp_path, capsys):
    out = tmp_path / "demo"
    with registered(), pytest.raises(ConfigError, match=r"configs/toy-md-tiny\.yaml"):
        run_demo(out=out, family=NAME)
    assert not out.exists()
