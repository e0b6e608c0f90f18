"""Card fields from every source, each in its own order of trust."""

from __future__ import annotations

import pytest
from rkllmd.catalog.describe import Declared, RkllmName, card, readable_name
from rkllmd.catalog.gguf import GgufFacts

GEMMA = "google_gemma-3-270m-w8a8-opt0-hybrid0-npu3-ctx16384-rk3588"
HEADER = GgufFacts("llama", "Header name", None, "135M", 8192, "Q4_1")


@pytest.mark.parametrize(
    ("stem", "readable"),
    [
        (GEMMA, "google gemma 3 270m"),
        ("Qwen2.5-0.5B-Instruct-rk3588-w8a8-opt-0-hybrid-ratio-0.0", "Qwen2.5 0.5B Instruct"),
        ("TinyLlama-1.1B-Chat-v1.0-rk3588-w8a8-opt-0-hybrid-ratio-0.5", "TinyLlama 1.1B Chat v1.0"),
        ("DeepSeek-R1-Distill-Qwen-1.5B_W8A8_RK3588-1.2.1", "DeepSeek R1 Distill Qwen 1.5B"),
        ("gemma-3-1b-it_w8a8", "gemma 3 1b it"),
        ("SmolLM2-135M-Instruct.Q4_1", "SmolLM2 135M Instruct"),
        ("llama-3.2-1b-instruct-q4_k_m", "llama 3.2 1b instruct"),
        ("model", "model"),
    ],
)
def test_readable_names(stem: str, readable: str) -> None:
    assert readable_name(stem) == readable


def test_rkllm_name_facts() -> None:
    assert RkllmName.parse(GEMMA) == RkllmName("RK3588", "W8A8", 16384, 3)
    assert RkllmName.parse("Qwen3-1.7B_w4a16_g128_rk3576") == RkllmName("RK3576", "W4A16_G128")
    assert RkllmName.parse("plain") == RkllmName()


def test_context_trust_order() -> None:
    hub, config = Declared(context_length=4096), Declared(context_length=32768)
    sidecar = Declared(context_length=1024)
    assert card("m", "gguf", 1, gguf=HEADER, hub=hub, sidecar=sidecar).context_length == 8192
    assert card("m", "gguf", 1, hub=hub, config=config, sidecar=sidecar).context_length == 4096
    assert card("m", "gguf", 1, config=config, sidecar=sidecar).context_length == 32768
    assert card("m", "gguf", 1, sidecar=sidecar).context_length == 1024
    assert card("m", "gguf", 1).context_length is None
    # .rkllm: the conversion's context caps the Hub's, and fills in when nothing else knows.
    assert card("m-ctx2048", "rkllm", 1, config=config).context_length == 2048
    assert card("m-ctx2048", "rkllm", 1, sidecar=sidecar).context_length == 2048
    assert card("m-ctx65536", "rkllm", 1, config=config).context_length == 32768


def test_name_description_and_type_trust_order() -> None:
    sidecar = Declared(name="Mine", description="My words", type="draft")
    hub = Declared(name="Hub", description="Hub words", type="embedding")
    config = Declared(type="speech")
    first = card("m", "gguf", 1, sidecar=sidecar, hub=hub, config=config, gguf=HEADER)
    assert (first.name, first.description, first.type) == ("Mine", "My words", "draft")
    second = card("m", "gguf", 1, hub=hub, config=config, gguf=HEADER)
    assert (second.name, second.description, second.type) == ("Hub", "Hub words", "embedding")
    third = card("m", "gguf", 1, config=config, gguf=HEADER)
    assert (third.name, third.type) == ("Header name", "speech")
    header_only = card("SmolLM2-135M-Instruct.Q4_1", "gguf", 98362432, gguf=HEADER)
    assert header_only.type == "chat"
    assert header_only.description == (
        "Llama chat model, 135M parameters, Q4_1, GGUF (CPU, llama.cpp), 8192-token context, 94 MiB"
    )


def test_generated_description_of_an_unknown_file() -> None:
    bare = card("blob", "gguf", 3 * 2**30)
    assert (bare.name, bare.type) == ("blob", "chat")
    assert bare.description == "Chat model, GGUF (CPU, llama.cpp), 3.0 GiB"
    assert (
        card("tiny.Q4_0", "gguf", 4096).description
        == "Chat model, Q4_0, GGUF (CPU, llama.cpp), 4 KiB"
    )
    npu = card("Qwen2.5-0.5B-Instruct_W8A8_RK3588", "rkllm", 600 * 2**20)
    assert npu.description == "Chat model, 0.5B parameters, W8A8, RKLLM for the RK3588, 600 MiB"
