"""Pure parts of the RKLLM backend: KV reuse decisions, chat formats, callback sinks."""

from __future__ import annotations

import json
import math
from array import array
from collections import deque
from pathlib import Path

import pytest
from rkllmd.backends.rkllm import abi as c
from rkllmd.backends.rkllm.kvcache import KvTracker, Plan
from rkllmd.backends.rkllm.loader import cpu_mask
from rkllmd.backends.rkllm.native import Inbox
from rkllmd.backends.rkllm.sinks import (
    DUE_FRACTION,
    EMIT_POLL_S,
    Emitter,
    HiddenSink,
    TextSink,
    TokenClock,
)
from rkllmd.backends.rkllm.template import FAMILIES, choose_format, family_for
from rkllmd.errors import GenerationFailed, LoadFailed
from rkllmd.requests import ChatMessage

# --- KvTracker ------------------------------------------------------------------------------

P1 = b"<s>user: hi</s><s>assistant:"
REPLY = [b" Hel", b"lo", b"!"]


def tracked(kept: int = 3) -> KvTracker:
    kv = KvTracker()
    plan = kv.plan(P1, 4096)
    assert plan == Plan(send=P1, clear=True, reused_bytes=0)
    kv.record(plan, P1, REPLY, kv_before=0, kv_after=10 + kept, prefill_tokens=10)
    return kv


def test_extension_sends_only_the_suffix() -> None:
    kv = tracked()
    prompt = P1 + b" Hello!</s><s>user: more</s><s>assistant:"
    plan = kv.plan(prompt, 4096)
    assert plan.send == b"</s><s>user: more</s><s>assistant:" and not plan.clear
    assert plan.reused_bytes == len(P1) + 7 and kv.cached_tokens == 13


def test_last_token_not_kept_is_sent_again() -> None:
    kv = tracked(kept=2)
    prompt = P1 + b" Hello!</s><s>user: more</s>"
    assert kv.plan(prompt, 4096).send == b"!</s><s>user: more</s>"


@pytest.mark.parametrize(
    "prompt",
    [
        P1,  # the same request again
        P1 + b" Hello!",  # nothing new after the cache
        P1 + b" Hellx!</s>",  # edited reply
        b"<s>user: ho</s><s>assistant: Hello!</s>more",  # edited history
        b"<s>system: x</s>" + P1 + b" Hello!</s>more",  # system prompt added
        b"something else",
    ],
)
def test_anything_but_an_extension_clears(prompt: bytes) -> None:
    plan = tracked().plan(prompt, 4096)
    assert plan.clear and plan.send == prompt and plan.reused_bytes == 0


def test_a_suffix_that_may_not_fit_clears() -> None:
    kv = tracked()
    prompt = P1 + b" Hello!" + b"x" * 200
    assert not kv.plan(prompt, 4096).clear
    assert kv.plan(prompt, 40).clear


@pytest.mark.parametrize(
    ("kv_after", "prefill"),
    [(None, 10), (10 + 4, 10), (10 + 1, 10), (13, 0)],  # unknown, EOS kept, lost tokens, no perf
)
def test_unexplained_cache_sizes_invalidate(kv_after: int | None, prefill: int) -> None:
    kv = KvTracker()
    plan = kv.plan(P1, 4096)
    kv.record(plan, P1, REPLY, kv_before=0, kv_after=kv_after, prefill_tokens=prefill)
    assert not kv.valid and kv.plan(P1 + b" Hello!x", 4096).clear


def test_cache_cut_inside_a_character_invalidates() -> None:
    kv = KvTracker()
    plan = kv.plan(P1, 4096)
    pieces = [" 日".encode()[:2], " 日".encode()[2:]]
    kv.record(plan, P1, pieces, kv_before=0, kv_after=11, prefill_tokens=10)
    assert not kv.valid


def test_invalidate() -> None:
    kv = tracked()
    kv.invalidate()
    assert not kv.valid and kv.cached_tokens == 0


# --- chat formats ---------------------------------------------------------------------------


def m(role: str, content: str, **extra: object) -> ChatMessage:
    return ChatMessage(role, content, **extra)  # type: ignore[arg-type]


def test_chatml_with_history() -> None:
    text = FAMILIES["chatml"](
        (m("system", "S"), m("user", "u1"), m("assistant", "a1"), m("user", "u2")), (), None
    )
    assert text == (
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nu1<|im_end|>\n"
        "<|im_start|>assistant\na1<|im_end|>\n<|im_start|>user\nu2<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_chatml_tools_calls_and_grouped_results() -> None:
    tool = {"type": "function", "function": {"name": "f", "parameters": {}}}
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}}
    text = FAMILIES["chatml"](
        (
            m("user", "go"),
            m("assistant", "", tool_calls=(call, call)),
            m("tool", "r1"),
            m("tool", "r2"),
        ),
        (tool,),
        None,
    )
    assert text.startswith("<|im_start|>system\n# Tools\n\nYou may call one or more functions")
    assert "\n" + json.dumps(tool) + "\n</tools>" in text
    assert (
        '<|im_start|>assistant\n<tool_call>\n{"name": "f", "arguments": {"x": 1}}\n</tool_call>\n'
        '<tool_call>\n{"name": "f", "arguments": {"x": 1}}\n</tool_call><|im_end|>\n'
    ) in text
    assert (
        "<|im_start|>user\n<tool_response>\nr1\n</tool_response>\n<tool_response>\nr2\n"
        "</tool_response><|im_end|>\n<|im_start|>assistant\n"
    ) in text


def test_qwen3_thinking_switch_and_history_without_reasoning() -> None:
    render = FAMILIES["qwen3"]
    history = (m("user", "q"), m("assistant", "<think>\nhm\n</think>\n\nA"), m("user", "q2"))
    assert "<|im_start|>assistant\nA<|im_end|>" in render(history, (), None)
    assert render(history, (), False).endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert render(history, (), True).endswith("<|im_start|>assistant\n")


@pytest.mark.parametrize(
    ("family", "expected"),
    [
        (
            "llama3",
            "<|start_header_id|>system<|end_header_id|>\n\nS<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nu<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n",
        ),
        ("gemma", "<start_of_turn>user\nS\n\nu<end_of_turn>\n<start_of_turn>model\n"),
        ("phi3", "<|system|>\nS<|end|>\n<|user|>\nu<|end|>\n<|assistant|>\n"),
        ("zephyr", "<|system|>\nS</s>\n<|user|>\nu</s>\n<|assistant|>\n"),
        ("deepseek-r1", "S<\uff5cUser\uff5c>u<\uff5cAssistant\uff5c><think>\n"),
    ],
)
def test_other_families(family: str, expected: str) -> None:
    assert FAMILIES[family]((m("system", "S"), m("user", "u")), (), None) == expected


@pytest.mark.parametrize(
    ("name", "family"),
    [
        ("Qwen2.5-1.5B-Instruct_W8A8_RK3588", "chatml"),
        ("Qwen3-4B-rk3588-w8a8_g512-opt-1-hybrid-ratio-1.0", "qwen3"),
        ("DeepSeek-R1-Distill-Qwen-1.5B_W8A8_RK3588", "deepseek-r1"),
        ("Llama-3.2-1B-Instruct-rk3588", "llama3"),
        ("gemma-2-2b-it-rk3588", "gemma"),
        ("Phi-3-mini-4k-instruct", "phi3"),
        ("TinyLlama-1.1B-Chat-v1.0", "zephyr"),
        ("internlm2-chat-1_8b", "chatml"),
        ("chatglm3-6b", None),
    ],
)
def test_family_from_file_names(name: str, family: str | None) -> None:
    assert family_for(name) == family


def test_format_choice_order(tmp_path: Path) -> None:
    model = tmp_path / "Qwen3-0.6B.rkllm"
    assert choose_format(model, None).source == "family"
    assert choose_format(tmp_path / "chatglm3.rkllm", None).source == "fallback"
    config = {"chat_template": "T:{{ messages[-1].content }}"}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    sidecar = choose_format(model, None)
    assert sidecar.source == "sidecar"
    assert sidecar.render((m("user", "hi"),), (), None) == "T:hi"
    jinja = "J:{% if enable_thinking is defined %}{{ enable_thinking }}{% endif %}"
    (tmp_path / "Qwen3-0.6B.jinja").write_text(jinja)
    assert choose_format(model, None).render((m("user", "x"),), (), False) == "J:False"
    assert choose_format(model, "gemma").family == "gemma"
    assert choose_format(model, "O:{{ tools | tojson }}").render((), ({"a": "é"},), None) == (
        'O:[{"a": "é"}]'
    )


def test_jinja_errors() -> None:
    with pytest.raises(LoadFailed):
        choose_format(Path("x.rkllm"), "{% if %}")
    fmt = choose_format(Path("x.rkllm"), "{{ raise_exception('no system role') }}")
    with pytest.raises(GenerationFailed):
        fmt.render((m("user", "x"),), (), None)


def test_reasoning_open_probe() -> None:
    assert choose_format(Path("DeepSeek-R1-Distill.rkllm"), None).opens_reasoning()
    assert not choose_format(Path("Qwen3-4B.rkllm"), None).opens_reasoning()


# --- sinks ---------------------------------------------------------------------------------


def text_sink(stop: tuple[str, ...] = (), budget: int = 100) -> tuple[TextSink, list[str]]:
    stops: list[str] = []
    return TextSink(stop, budget, lambda: stops.append("stop")), stops


@pytest.mark.parametrize("rest_only", [False, True])
def test_waiting_pieces_are_joined(rest_only: bool) -> None:
    sink, stops = text_sink()
    euro = "€".encode()
    sink.token(b"a", False)
    sink.token(euro[:1], True)
    assert sink.take() == "a"
    sink.token(euro[1:] if rest_only else euro, False)
    sink.token(b"b", False)
    sink.flush()
    assert sink.take() == "€b" and sink.take() == ""
    assert sink.pieces == [b"a", euro[:1], euro[1:], b"b"] and not stops


def test_a_budget_stops_the_run() -> None:
    sink, stops = text_sink(budget=2)
    for piece in (b"a", b"b", b"c"):
        sink.token(piece, False)
    sink.flush()
    assert sink.take() == "ab" and sink.budget_hit and sink.tokens == 2
    assert stops == ["stop"]  # once, though a token came after it


def test_a_stop_string_stops_the_run() -> None:
    sink, stops = text_sink(stop=("END",))
    for piece in (b"ok E", b"ND more", b"ignored"):
        sink.token(piece, False)
    sink.flush()
    assert sink.take() == "ok " and sink.stopped and stops == ["stop"]


def test_the_emitter_turns_callback_items_into_text_in_order() -> None:
    inbox: Inbox = deque()
    sent: list[str] = []
    sink, stops = text_sink(stop=("END",))
    out = Emitter(inbox, sink, sent.append)
    euro = "€".encode()
    items = [(c.RUN_NORMAL, b"a"), (c.RUN_WAITING, euro[:1]), (c.RUN_NORMAL, euro)]
    items += [(c.RUN_NORMAL, b" xE"), (c.RUN_NORMAL, b"ND y"), (c.RUN_NORMAL, b"z")]
    perf = c.PerfStat(prefill_time_ms=1.5, prefill_tokens=3, generate_tokens=6)
    items.append((c.RUN_FINISH, bytes(perf)))
    inbox.extend(items)
    out.close()
    assert "".join(sent) == "a€ x" and sink.stopped and stops == ["stop"]
    assert sink.pieces == [b"a", euro[:1], euro[1:], b" xE", b"ND y"]
    assert sink.perf is not None and sink.perf["prefill_tokens"] == 3
    assert sink.perf["generate_tokens"] == 6 and not inbox


@pytest.mark.timeout(120)
def test_closing_wakes_an_emit_thread_that_planned_a_long_sleep(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The run has returned: the end of the reply (and the next run) must not wait for
    # the rest of a sleep planned for the next token. Without the wake this test hangs.
    monkeypatch.setattr(TokenClock, "sleep_s", lambda self, now: 3600.0)
    inbox: Inbox = deque()
    sent: list[str] = []
    sink, _ = text_sink()
    out = Emitter(inbox, sink, sent.append)
    inbox.append((c.RUN_NORMAL, b"last"))
    out.close()
    assert sent == ["last"]


def test_a_failure_in_the_text_work_aborts_the_run_and_fails_it() -> None:
    inbox: Inbox = deque()
    sink, stops = text_sink()

    def broken(text: bytes, waiting: bool) -> None:
        raise RuntimeError("a bug")

    sink.token = broken  # type: ignore[method-assign]
    out = Emitter(inbox, sink, [].append)
    inbox.append((c.RUN_NORMAL, b"a"))
    out.close()
    assert sink.failed and stops == ["stop"]


def test_the_emit_thread_sleeps_until_a_token_is_nearly_due() -> None:
    clock = TokenClock()

    def token_at(t: float) -> None:
        clock.looked_empty(t - 0.0005)  # found by a look right after an empty one
        clock.arrived(t)

    assert clock.sleep_s(0.0) == EMIT_POLL_S  # nothing known yet: look often
    token_at(1.000)
    assert clock.sleep_s(1.0) == EMIT_POLL_S
    token_at(1.025)
    assert clock.sleep_s(1.025) == pytest.approx(0.025 * DUE_FRACTION)
    assert clock.sleep_s(1.048) == EMIT_POLL_S  # due: look every poll
    token_at(2.0)  # after one stall the next token is still expected at the usual gap
    assert clock.sleep_s(2.0) == pytest.approx(0.025 * DUE_FRACTION)


def test_a_token_found_late_does_not_plan_the_next_sleep() -> None:
    clock = TokenClock()
    for t in (1.000, 1.025):
        clock.looked_empty(t - 0.0005)
        clock.arrived(t)
    clock.looked_empty(1.026)
    clock.arrived(1.070)  # found 44 ms after the last empty look: arrived some time before
    assert clock.sleep_s(1.070) == EMIT_POLL_S  # poll until a token's time is known again
    clock.looked_empty(1.0745)
    clock.arrived(1.075)
    assert clock.sleep_s(1.075) == pytest.approx(0.025 * DUE_FRACTION)


def test_hidden_states_are_mean_pooled_and_normalised() -> None:
    sink = HiddenSink()
    sink.hidden(array("f", [1.0, 0.0, 3.0, 4.0, 2.0, -1.0]), dim=3, tokens=2)
    assert sink.vector is not None and sink.tokens == 2
    sums = [1.0 + 4.0, 0.0 + 2.0, 3.0 - 1.0]
    norm = math.sqrt(sum(x * x for x in sums))
    assert sink.vector == pytest.approx([x / norm for x in sums])


def test_cpu_mask_takes_the_big_cores() -> None:
    assert cpu_mask(4, 8) == 0xF0
    assert cpu_mask(4, 4) == 0x0F
    assert cpu_mask(2, 8) == 0xC0
