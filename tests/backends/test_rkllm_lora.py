"""LoRA adapters on the NPU path: rkllm_load_lora at load, the adapter named in every
run's lora_params, through TabbyAPI's routes (the C double mixes a non-zero
adapter into its reply, as a LoRA changes a model's greedy output)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.backends.conftest import MODEL_ID, CallLog, NpuDaemon
from tests.fixtures.lora import write_rkllm_lora


def _call(daemon: Any, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"} if data else {}
    request = urllib.request.Request(
        daemon.http_url + path, data=data, headers=headers, method=method
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _reply(daemon: Any) -> str:
    body = {"model": MODEL_ID, "messages": [{"role": "user", "content": "hi"}], "temperature": 0}
    status, answer = _call(daemon, "POST", "/v1/chat/completions", body)
    assert status == 200, answer
    return str(answer["choices"][0]["message"]["content"])


def _apply(daemon: Any, name: str, scaling: float) -> dict[str, Any]:
    _call(daemon, "DELETE", "/v1/loras/active")
    status, body = _call(
        daemon, "POST", "/v1/loras/load", {"loras": [{"name": name, "scaling": scaling}]}
    )
    assert status == 200, body
    return body


def test_npu_adapters(npu_daemon: NpuDaemon, npu_models: Path, call_log: CallLog) -> None:
    (npu_models / "lora").mkdir()
    write_rkllm_lora(npu_models / "lora" / "tone.rkllm")
    write_rkllm_lora(npu_models / "lora" / "other.rkllm")
    (npu_models / "lora" / "cpu-only.gguf").write_bytes(b"GGUF")
    daemon = npu_daemon()
    status, listed = _call(daemon, "GET", "/v1/loras")
    assert [c["id"] for c in listed["data"]] == ["cpu-only", "other", "tone"]

    base = _reply(daemon)
    assert _apply(daemon, "tone", 0.0) == {"success": ["tone"], "failure": []}
    (loaded,) = call_log.calls("rkllm_load_lora")
    assert loaded["name"] == "tone" and loaded["scale"] == 0.0
    assert loaded["path"].endswith("/lora/tone.rkllm")
    assert _reply(daemon) == base  # a zero adapter changes nothing
    assert call_log.runs()[-1]["lora"] == "tone"

    assert _apply(daemon, "tone", 1.0)["success"] == ["tone"]
    changed = _reply(daemon)
    assert changed != base and call_log.runs()[-1]["lora"] == "tone"

    # A GGUF adapter does not fit an .rkllm model; the NPU applies one adapter at a time.
    assert _apply(daemon, "cpu-only", 1.0) == {"success": [], "failure": ["cpu-only"]}
    _call(daemon, "POST", "/v1/loras/load", {"loras": [{"name": "tone"}]})
    status, two = _call(daemon, "POST", "/v1/loras/load", {"loras": [{"name": "other"}]})
    assert status == 200 and two["failure"] == ["other"] and "one LoRA" in two["message"]
    status, applied = _call(daemon, "GET", "/v1/loras/active")
    assert [c["id"] for c in applied["data"]] == ["tone"]  # the previous load came back

    _call(daemon, "DELETE", "/v1/loras/active")
    assert _reply(daemon) == base and call_log.runs()[-1]["lora"] is None
