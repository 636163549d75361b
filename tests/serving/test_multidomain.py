"""Multi-domain models through a real server on 127.0.0.1 and ONNX Runtime: every target by
direction and by target_domain, unknown domains, and different targets in one batch.

The toy family of tests/multidomain_family.py (three domains) is exported once per module,
with its per-target graphs and its conditional graph.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest

from i2i.export import export_checkpoint
from i2i.serving import pipeline
from i2i.v1 import translator_pb2 as pb
from tests.multidomain_family import DOMAINS, multidomain_checkpoint, pytorch_translate, registered
from tests.serving.conftest import RunningServer, png_bytes, sample_image, server_config
from tests.serving.test_server import decode

MODEL = "domains"


@pytest.fixture(scope="module")
def md_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The toy multi-domain model exported (ONNX FP32 and FP16) as model "domains"."""
    root = tmp_path_factory.mktemp("multidomain")
    checkpoint = multidomain_checkpoint(root / "checkpoints" / "domains.pt")
    with registered():
        export_checkpoint(checkpoint, root / "repository", MODEL, formats=["onnx", "onnx-fp16"])
    return root / "repository"


@pytest.fixture(scope="module")
def md_server(md_repository: Path) -> Iterator[RunningServer]:
    server = RunningServer(server_config(md_repository))
    yield server
    server.close()


def without_conditional(source: Path, target: Path) -> Path:
    """A copy of a repository whose manifest has no conditional graph (as before it existed)."""
    shutil.copytree(source, target)
    path = target / MODEL / "1" / "manifest.json"
    manifest = json.loads(path.read_text())
    del manifest["conditional"]
    manifest["artifacts"] = [a for a in manifest["artifacts"] if a.get("graph") != "conditional"]
    path.write_text(json.dumps(manifest))
    return target


def request(pixels: np.ndarray, **fields: str) -> pb.TranslateRequest:
    return pb.TranslateRequest(
        model=MODEL,
        image=pb.Image(encoded=png_bytes(pixels)),
        output=pb.OutputOptions(format=pb.IMAGE_FORMAT_RAW),
        **fields,
    )


def checkpoint_of(repository: Path) -> Path:
    return repository.parent / "checkpoints" / "domains.pt"


def test_models_list_domains_and_each_directions_target(md_server):
    stub = md_server.stub()
    (info,) = stub.ListModels(pb.ListModelsRequest(), timeout=10).models
    assert list(info.domains) == list(DOMAINS)
    assert info.shared_batches is True
    targets = {d.name: d.target_domain for d in info.directions}
    assert targets == {f"to_{d}": d for d in DOMAINS}
    assert stub.GetModel(pb.GetModelRequest(model=MODEL), timeout=10) == info


def test_every_target_by_direction_and_by_field(md_server, md_repository):
    stub = md_server.stub()
    pixels = sample_image(32, 36, seed=3)
    expected = pytorch_translate(
        checkpoint_of(md_repository), np.repeat(pixels[None], len(DOMAINS), 0), [0, 1, 2]
    )
    for index, domain in enumerate(DOMAINS):
        by_direction = stub.Translate(request(pixels, direction=f"to_{domain}"), timeout=30)
        by_field = stub.Translate(request(pixels, target_domain=domain), timeout=30)
        both = stub.Translate(
            request(pixels, direction=f"to_{domain}", target_domain=domain), timeout=30
        )
        assert by_direction.direction == by_field.direction == both.direction == f"to_{domain}"
        outputs = [decode(r.images[0]) for r in (by_direction, by_field, both)]
        assert np.array_equal(outputs[0], outputs[1]) and np.array_equal(outputs[0], outputs[2])
        diff = np.abs(outputs[0].astype(int) - expected[index].astype(int))
        assert diff.max() <= 1, domain
    # The targets differ: the domain index reaches the graph.
    assert not np.array_equal(expected[0], expected[1])


@pytest.mark.parametrize(
    "fields", [{"target_domain": "noon"}, {"direction": "to_noon"}], ids=["field", "direction"]
)
def test_unknown_domain_is_not_found_listing_the_domains(md_server, fields):
    with pytest.raises(grpc.RpcError) as caught:
        md_server.stub().Translate(request(sample_image(), **fields), timeout=10)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert "'noon'" in caught.value.details()
    assert "day, dusk, night" in caught.value.details()


def test_direction_and_target_domain_that_disagree_are_invalid(md_server):
    with pytest.raises(grpc.RpcError) as caught:
        md_server.stub().Translate(
            request(sample_image(), direction="to_day", target_domain="night"), timeout=10
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'to_day'" in caught.value.details() and "'night'" in caught.value.details()


def test_target_domain_on_a_two_direction_model_is_not_found(shared_server):
    with pytest.raises(grpc.RpcError) as caught:
        shared_server.stub().Translate(
            pb.TranslateRequest(
                model="tiny", target_domain="B", image=pb.Image(encoded=png_bytes(sample_image()))
            ),
            timeout=10,
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert "not a multi-domain model" in caught.value.details()


def send_together(server: RunningServer, pixels: np.ndarray) -> list[pb.TranslateResponse]:
    """One request per target, all in flight at once; their replies in DOMAINS order."""
    stub = server.stub()
    calls = [
        stub.Translate.future(request(pixels, target_domain=domain), timeout=60)
        for domain in DOMAINS
    ]
    return [call.result() for call in calls]


def test_different_targets_share_one_run_of_the_conditional_graph(md_repository):
    # max_batch is the number of requests and the delay far longer than the test: the batch
    # goes when it is full, so all three must be in it (or the test waits and fails).
    server = RunningServer(server_config(md_repository, max_batch=3, max_delay_ms=60_000.0))
    try:
        pixels = sample_image(32, 32, seed=8)
        replies = send_together(server, pixels)
        assert [r.batch_size for r in replies] == [3, 3, 3]
        metrics = server.metrics()
        label = 'direction="conditional",model="domains"'
        assert metrics[f"i2i_inference_batch_size_count{{{label}}}"] == 1
        assert metrics[f"i2i_inference_batch_size_sum{{{label}}}"] == 3
        expected = pytorch_translate(
            checkpoint_of(md_repository), np.repeat(pixels[None], 3, 0), [0, 1, 2]
        )
        for reply, wanted in zip(replies, expected, strict=True):
            assert np.abs(decode(reply.images[0]).astype(int) - wanted.astype(int)).max() <= 1
        # Request metrics keep their direction labels.
        for domain in DOMAINS:
            key = (
                f'i2i_inference_requests_total{{code="OK",direction="to_{domain}",model="domains"}}'
            )
            assert metrics[key] == 1
    finally:
        server.close()


def test_without_the_conditional_graph_each_target_batches_alone(md_repository, tmp_path):
    repository = without_conditional(md_repository, tmp_path / "repository")
    server = RunningServer(server_config(repository, max_batch=3, max_delay_ms=200.0))
    try:
        info = server.stub().GetModel(pb.GetModelRequest(model=MODEL), timeout=10)
        assert info.shared_batches is False
        assert {d.artifact for d in info.directions} == {f"to_{d}.onnx" for d in DOMAINS}
        replies = send_together(server, sample_image(32, 32, seed=8))
        assert [r.batch_size for r in replies] == [1, 1, 1]
        assert [r.direction for r in replies] == [f"to_{d}" for d in DOMAINS]
    finally:
        server.close()


def test_client_names_the_target_domain(md_server):
    from i2i.client import Client

    pixels = sample_image(32, 32, seed=4)
    with Client(md_server.target) as client:
        by_field = client.translate(pixels, model=MODEL, target_domain="night")
        by_direction = client.translate(pixels, model=MODEL, direction="to_night")
        with pytest.raises(ValueError, match="target_domain"):
            client.translate(pixels, model=MODEL)
    assert by_field.direction == "to_night"
    assert np.array_equal(by_field.images[0], by_direction.images[0])


def test_translate_command_to_a_domain(md_server, md_repository, tmp_path, capsys):
    from i2i.cli import main
    from tests.serving.test_server import decode as decode_image

    source = tmp_path / "in" / "a.png"
    source.parent.mkdir()
    pixels = sample_image(32, 32, seed=6)
    source.write_bytes(png_bytes(pixels))
    common = ["translate", str(source), "--model", MODEL, "--no-progress"]
    assert (
        main([*common, "--server", md_server.target, "--to", "dusk", "--out", str(tmp_path / "s")])
        == 0
    )
    assert (
        main(
            [
                *common,
                "--repository",
                str(md_repository),
                "--to",
                "dusk",
                "--out",
                str(tmp_path / "l"),
            ]
        )
        == 0
    )
    reply = md_server.stub().Translate(request(pixels, direction="to_dusk"), timeout=30)
    served = decode(reply.images[0])
    for folder in ("s", "l"):
        written = decode_image(pb.Image(encoded=(tmp_path / folder / "a.png").read_bytes()))
        assert np.array_equal(written, served), folder
    capsys.readouterr()


@pytest.mark.parametrize("where", ["server", "repository"])
def test_translate_command_unknown_domain_lists_the_domains(
    md_server, md_repository, tmp_path, capsys, where
):
    from i2i.cli import main

    source = tmp_path / "a.png"
    source.write_bytes(png_bytes(sample_image()))
    mode = (
        ["--server", md_server.target]
        if where == "server"
        else ["--repository", str(md_repository)]
    )
    args = ["translate", str(source), "--model", MODEL, "--out", str(tmp_path / "o"), *mode]
    assert main([*args, "--to", "noon"]) == 2
    err = capsys.readouterr().err
    assert "no domain 'noon'" in err and "day, dusk, night" in err
    assert main([*args, "--to", "day", "--direction", "to_night"]) == 2
    assert "different targets" in capsys.readouterr().err
    assert main(args) == 2
    assert "--to DOMAIN" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_requests_being_decoded_for_any_target_share_the_queue(md_repository, monkeypatch):
    """The targets of a multi-domain model share one batcher, so --max-queue counts the
    requests being decoded for every target together, as it counts those queued."""
    entered, release = threading.Semaphore(0), threading.Event()
    real_prepare = pipeline.prepare

    def held_prepare(*args, **kwargs):
        entered.release()
        assert release.wait(30), "the test never released the decoding"
        return real_prepare(*args, **kwargs)

    monkeypatch.setattr(pipeline, "prepare", held_prepare)
    server = RunningServer(server_config(md_repository, max_queue=2))
    try:
        stub = server.stub()
        with ThreadPoolExecutor(2) as pool:
            held = [
                pool.submit(
                    stub.Translate, request(sample_image(), direction=f"to_{d}"), timeout=30
                )
                for d in DOMAINS[:2]
            ]
            for _ in held:  # one decoding for day and one for dusk: the queue is full
                assert entered.acquire(timeout=30), "a request never reached decoding"
            with pytest.raises(grpc.RpcError) as caught:  # refused, not decoded
                stub.Translate(request(sample_image(), direction="to_night"), timeout=10)
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "queue" in caught.value.details()
            release.set()
            assert all(f.result(30).images for f in held)
        # Decoded and answered: the count is back to zero, and night is served.
        release.set()
        assert stub.Translate(request(sample_image(), direction="to_night"), timeout=30).images
    finally:
        release.set()
        server.close()


def test_the_shared_queue_is_one_pending_series(md_repository):
    """Requests for different targets wait in one queue, reported once (under the shared
    batcher's label), so summing the gauge over directions counts each request once."""
    server = RunningServer(server_config(md_repository, max_batch=3, max_delay_ms=60_000.0))
    try:
        stub = server.stub()
        pending = 'i2i_inference_pending_requests{direction="conditional",model="domains"}'
        with ThreadPoolExecutor(3) as pool:
            waiting = [
                pool.submit(
                    stub.Translate, request(sample_image(), direction=f"to_{d}"), timeout=60
                )
                for d in DOMAINS[:2]
            ]
            deadline = time.monotonic() + 30
            while server.metrics()[pending] < 2:  # the batch waits for a third request
                assert time.monotonic() < deadline, "the requests never queued"
                time.sleep(0.02)
            metrics = server.metrics()
            series = {k: v for k, v in metrics.items() if k.startswith("i2i_inference_pending")}
            assert series == {pending: 2}
            last = stub.Translate(request(sample_image(), direction="to_night"), timeout=60)
            assert last.batch_size == 3 and all(f.result(30).batch_size == 3 for f in waiting)
        assert server.metrics()[pending] == 0
    finally:
        server.close()
