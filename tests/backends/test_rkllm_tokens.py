"""Token counts of .rkllm models from the tokenizer.json next to the model (the C double
counts a token per 4 bytes; the test tokenizer counts words, so the two disagree)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.backends.conftest import MODEL_ID, CallLog, NpuDaemon

WORDS = "a b c hello world the quick brown fox user assistant system im_start im_end"
LONG = " ".join(["a"] * 150)  # 300 bytes: ~90 tokens to the double, 150+ to the tokenizer


def write_tokenizer(path: Path) -> Any:
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    vocab = {"[UNK]": 0, "<s>": 1}
    for word in WORDS.split():
        vocab.setdefault(word, len(vocab))
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.add_special_tokens(["<s>"])
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", 1)]
    )
    tokenizer.save(str(path))
    return tokenizer


def _post(daemon: Any, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        daemon.http_url + path,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _long_chat(daemon: Any) -> tuple[int, dict[str, Any]]:
    messages = [{"role": "user", "content": LONG}]
    return _post(daemon, "/v1/chat/completions", {"model": MODEL_ID, "messages": messages})


def test_without_tokenizer_json_tokens_are_a_clear_error(npu_daemon: NpuDaemon) -> None:
    daemon = npu_daemon()
    status, body = _post(daemon, "/v1/tokens/encode", {"text": "hello world"})
    assert status == 400 and body["error"]["code"] == "tokenizer_unavailable", body
    assert "tokenizer.json" in body["message"]
    assert daemon.call("show", model=MODEL_ID)["props"]["tokenizer"] is None
    daemon.call("load", model=MODEL_ID, ctx_size=128)
    status, body = _long_chat(daemon)  # the byte estimate lets it through to the runtime
    assert status == 200, body


def test_tokenizer_json_gives_ids_counts_and_context_checks(
    npu_daemon: NpuDaemon, npu_models: Path, call_log: CallLog
) -> None:
    tokenizer = write_tokenizer(npu_models / "tokenizer.json")
    daemon = npu_daemon()
    assert daemon.call("show", model=MODEL_ID)["props"]["tokenizer"] == "tokenizer.json"
    text = "hello world the quick brown fox"
    status, body = _post(daemon, "/v1/tokens/encode", {"text": text})
    assert status == 200 and body["tokens"] == tokenizer.encode(text).ids == [1, 5, 6, 7, 8, 9, 10]
    ids = body["tokens"]
    status, body = _post(daemon, "/v1/token/decode", {"tokens": ids})
    assert status == 200 and body["text"] == "<s> " + text  # special tokens by default
    plain = _post(daemon, "/v1/token/decode", {"tokens": ids, "decode_special_tokens": False})
    assert plain == (200, {"text": text})
    status, body = _post(daemon, "/v1/tokens/decode", {"tokens": [99]})
    assert status == 400 and body["error"]["param"] == "tokens"

    daemon.call("load", model=MODEL_ID, ctx_size=128)
    runs = len(call_log.runs())
    status, body = _long_chat(daemon)
    assert status == 400 and body["error"]["code"] == "context_length_exceeded", body
    rendered = call_log.runs()[-1]["input"] if runs else None
    assert len(call_log.runs()) == runs  # refused before the runtime saw it
    counted = body["error"]["details"]["prompt_tokens"]
    assert counted >= 150 and counted == len(
        tokenizer.encode(_chatml(LONG), add_special_tokens=False).ids
    ), (counted, rendered)


def _chatml(content: str) -> str:
    return f"<|im_start|>user\n{content}<|im_end|>\n<|im_start|>assistant\n"
