"""The simulator as a client sees it: documented limits, envelopes, windows, admin, CLI."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from typing import Any

import httpx
import pytest

from syncsvc.embed import lexical
from syncsvc.simulator import FaultKind, FaultRule, SimulatorThread, parse_fault
from syncsvc.simulator.vectors import embedding
from tests.simulator_fixtures import SIM_KEY

AUTH = {"Authorization": f"Bearer {SIM_KEY}"}
NATIVE = "/api/v1/services/embeddings/text-embedding/text-embedding"
COMPATIBLE = "/compatible-mode/v1/embeddings"


def compatible(sim: SimulatorThread, texts: list[str], **extra: Any) -> httpx.Response:
    headers = extra.pop("headers", AUTH)
    body = {"model": "text-embedding-v4", "input": texts, "encoding_format": "float", **extra}
    return httpx.post(sim.url + COMPATIBLE, json=body, headers=headers)


def native(sim: SimulatorThread, texts: list[str], **parameters: Any) -> httpx.Response:
    body = {"model": "text-embedding-v3", "input": {"texts": texts}, "parameters": parameters}
    return httpx.post(sim.url + NATIVE, json=body, headers=AUTH)


def test_compatible_success_shape(simulator: SimulatorThread) -> None:
    reply = compatible(simulator, ["one fish", "two fish"], dimensions=128)
    assert reply.status_code == 200
    body = reply.json()
    assert [d["index"] for d in body["data"]] == [0, 1]
    assert body["data"][1]["embedding"] == embedding("two fish", 128)
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] == 4
    assert body["model"] == "text-embedding-v4" and body["id"]


def test_native_success_shape_defaults_to_1024(simulator: SimulatorThread) -> None:
    reply = native(simulator, ["red fish"], text_type="query")
    body = reply.json()
    assert reply.status_code == 200 and body["status_code"] == 200
    [item] = body["output"]["embeddings"]
    assert item["text_index"] == 0 and len(item["embedding"]) == 1024
    assert body["usage"]["total_tokens"] == 2 and body["request_id"]


def test_batch_over_ten_is_rejected_with_the_limit_in_the_message(
    simulator: SimulatorThread,
) -> None:
    reply = compatible(simulator, [f"t{i}" for i in range(11)])
    assert reply.status_code == 400
    error = reply.json()["error"]
    assert "should not be larger than 10" in error["message"]
    assert set(error) == {"message", "type", "param", "code"}
    assert reply.json()["request_id"]
    simulator.configure(max_batch=6)
    assert "larger than 6" in compatible(simulator, ["a"] * 7).json()["error"]["message"]


def test_input_token_limit_and_empty_input(simulator: SimulatorThread) -> None:
    too_long = native(simulator, ["word " * 8193])
    assert too_long.status_code == 400
    assert too_long.json()["code"] == "InvalidParameter"
    assert too_long.json()["message"] == "Range of input length should be [1, 8192]"
    assert native(simulator, ["word " * 8000]).status_code == 200
    assert compatible(simulator, [""]).status_code == 400


def test_dimensions_are_checked_per_model(simulator: SimulatorThread) -> None:
    assert native(simulator, ["x"], dimension=768).status_code == 200
    bad = native(simulator, ["x"], dimension=2048)  # v4 only
    assert bad.status_code == 400 and "1024, 768, 512" in bad.json()["message"]
    unknown = compatible(simulator, ["x"], model="text-embedding-v9")
    assert unknown.status_code == 400 and unknown.json()["error"]["message"] == "Model not exist."


def test_bad_key_gets_401_in_both_envelopes(simulator: SimulatorThread) -> None:
    wrong = {"Authorization": "Bearer nope"}
    reply = compatible(simulator, ["x"], headers=wrong)
    assert reply.status_code == 401
    assert reply.json()["error"]["code"] == "invalid_api_key"
    body = {"model": "text-embedding-v4", "input": {"texts": ["x"]}}
    reply = httpx.post(simulator.url + NATIVE, json=body, headers=wrong)
    assert (reply.status_code, reply.json()["code"]) == (401, "InvalidApiKey")


def _start_of_a_second() -> None:
    while time.monotonic() % 1.0 > 0.05:
        time.sleep(0.01)


def test_rpm_is_enforced_per_one_second_window(simulator: SimulatorThread) -> None:
    simulator.configure(rpm=600)  # 10 per second
    _start_of_a_second()
    with httpx.Client(headers=AUTH) as client:
        body = {"model": "text-embedding-v4", "input": ["x"]}
        statuses = [client.post(simulator.url + COMPATIBLE, json=body) for _ in range(14)]
    assert [r.status_code for r in statuses] == [200] * 10 + [429] * 4
    assert statuses[-1].json()["error"]["code"] == "limit_requests"
    assert simulator.stats()["rate_limited"] == 4


def test_tpm_is_enforced_per_window_in_the_native_envelope(simulator: SimulatorThread) -> None:
    simulator.configure(tpm=600)  # 10 tokens per second
    _start_of_a_second()
    first = native(simulator, ["a b c d e f g h"])
    second = native(simulator, ["i j k l"])
    assert first.status_code == 200
    assert (second.status_code, second.json()["code"]) == (429, "Throttling.AllocationQuota")


def test_admin_faults_count_down_and_stats_count(simulator: SimulatorThread) -> None:
    simulator.set_faults(FaultRule(FaultKind.RATE_LIMIT, count=2, retry_after=3, route="native"))
    assert compatible(simulator, ["x"]).status_code == 200  # other route unaffected
    first = native(simulator, ["x"])
    assert first.status_code == 429 and first.headers["retry-after"] == "3"
    assert native(simulator, ["x"]).status_code == 429
    assert native(simulator, ["x"]).status_code == 200
    faults = httpx.get(simulator.url + "/_sim/faults").json()
    assert faults["faults"][0]["remaining"] == 0
    stats = simulator.stats()
    assert stats["by_route"] == {"compatible": 1, "native": 3}
    assert stats["by_status"] == {"200": 2, "429": 2}
    assert stats["faults"] == {"429": 2}
    assert stats["ok"] == 2 and stats["inputs"] == 2


def test_admin_rejects_unknown_fault_fields(simulator: SimulatorThread) -> None:
    reply = httpx.post(simulator.url + "/_sim/faults", json={"faults": [{"kind": "nope"}]})
    assert reply.status_code == 400


def test_parse_fault() -> None:
    rule = parse_fault("429:rate=0.05,retry_after=1.5,route=native")
    assert rule == FaultRule(FaultKind.RATE_LIMIT, rate=0.05, retry_after=1.5, route="native")
    assert parse_fault("500:count=3") == FaultRule(FaultKind.SERVER_ERROR, count=3)
    with pytest.raises(ValueError, match="kinds: 429"):
        parse_fault("teapot")
    with pytest.raises(ValueError, match="key=value"):
        parse_fault("500:count")


def test_cli_serves_with_faults_from_the_command_line() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [
        sys.executable, "-c", "from syncsvc.cli import main; main()",
        "simulate-api", "--port", str(port), "--api-key", "cli-key",
        "--fault", "500:count=1", "--poison", "BAD", "--vectors", "lexical",
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        headers = {"Authorization": "Bearer cli-key"}
        body = {"model": "text-embedding-v4", "input": ["hello world"], "dimensions": 64}
        assert httpx.post(url + COMPATIBLE, json=body, headers=headers).status_code == 500
        ok = httpx.post(url + COMPATIBLE, json=body, headers=headers)
        assert ok.json()["data"][0]["embedding"] == lexical.embed("hello world", 64)
        body["input"] = ["BAD words"]
        poisoned = httpx.post(url + COMPATIBLE, json=body, headers=headers)
        assert poisoned.json()["error"]["code"] == "data_inspection_failed"
    finally:
        process.terminate()
        process.wait(timeout=10)


TEXTS = ["", "the a an", "Hello, world!", "naïve café 你好 世界 " * 5, "x y x y z " * 40]


@pytest.mark.parametrize("dims", [64, 1024, 2560])
def test_fast_sparse_vectors_equal_the_lexical_embedder_bit_for_bit(dims: int) -> None:
    from syncsvc.simulator.vectors import dense, lexical_sparse, values_of, vector_json

    for text in TEXTS:
        exact = lexical.embed(text, dims)
        assert dense(lexical_sparse(text, dims), dims) == exact
        assert json.loads(vector_json(values_of(text, dims, "lexical"))) == exact
        assert embedding(text, dims, "lexical") == exact


@pytest.mark.parametrize("dims", [64, 1024, 2048])
def test_dense_vectors_are_unit_full_precision_float32s_as_the_api_prints_them(dims: int) -> None:
    import numpy as np

    from syncsvc.simulator.vectors import values_of, vector_json

    for text in TEXTS:
        values = embedding(text, dims)
        assert len(values) == dims and all(v != 0.0 for v in values)
        assert abs(float(np.linalg.norm(values)) - 1.0) < 1e-6
        # Each value is a float32 written as the shortest double that reads back to it.
        assert all(float(np.float32(v)) == v for v in values)
        text_json = vector_json(values_of(text, dims, "dense"))
        assert json.loads(text_json) == values
        assert embedding(text, dims) == values  # deterministic per text
    # About 20 bytes a value, as the real API's ~20 KB per 1,024-d vector.
    assert len(vector_json(values_of("Hello, world!", 1024, "dense"))) > 18 * 1024
    # Texts sharing words stay close; unrelated texts do not.
    near = np.dot(embedding("red fish swims", 256), embedding("red fish sleeps", 256))
    far = np.dot(embedding("red fish swims", 256), embedding("tax form deadline", 256))
    assert near > 0.4 and abs(far) < 0.3


def test_reply_form_is_a_setting_that_a_reset_keeps(simulator: SimulatorThread) -> None:
    dense = compatible(simulator, ["one fish"], dimensions=64).json()["data"][0]["embedding"]
    assert dense == embedding("one fish", 64) != lexical.embed("one fish", 64)
    simulator.configure(vectors="lexical")
    simulator.reset()
    sparse = compatible(simulator, ["one fish"], dimensions=64).json()["data"][0]["embedding"]
    assert sparse == embedding("one fish", 64, "lexical") == lexical.embed("one fish", 64)
    with pytest.raises(httpx.HTTPStatusError):
        simulator.configure(vectors="bag")
