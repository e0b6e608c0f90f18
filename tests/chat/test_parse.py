"""OutputParser: reasoning split, tool-call extraction, partial tags across chunks."""

from __future__ import annotations

import itertools
import json
import random

import pytest
from rkllmd.chat.parse import Delta, OutputParser, ToolCall, parse_tool_call


def run(chunks: list[str], **flags: bool) -> tuple[str, str, list[ToolCall], list[Delta]]:
    parser = OutputParser(**flags)  # type: ignore[arg-type]
    deltas: list[Delta] = []
    for chunk in chunks:
        deltas.extend(parser.feed(chunk))
    rest, calls = parser.finish()
    deltas.extend(rest)
    content = "".join(d.text for d in deltas if d.kind == "content")
    reasoning = "".join(d.text for d in deltas if d.kind == "reasoning")
    return content, reasoning, calls, deltas


def splits(text: str, seed: int = 0) -> list[list[str]]:
    """Whole, one char at a time, every two-way split, and a few random chunkings."""
    out = [[text], list(text)]
    out += [[text[:i], text[i:]] for i in range(1, len(text))]
    rng = random.Random(seed)
    for _ in range(20):
        cuts = sorted(rng.sample(range(1, len(text)), min(len(text) - 1, rng.randint(1, 8))))
        bounds = [0, *cuts, len(text)]
        out.append([text[a:b] for a, b in itertools.pairwise(bounds)])
    return out


def assert_same_for_all_splits(text: str, **flags: bool) -> tuple[str, str, list[ToolCall]]:
    first = run([text], **flags)
    for chunks in splits(text):
        got = run(chunks, **flags)
        assert got[:2] == first[:2], chunks
        assert [(c.name, c.arguments) for c in got[2]] == [(c.name, c.arguments) for c in first[2]]
    return first[:3]


# --- pass-through ------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "hello", "  spaced  \n", "a <think>b</think> <tool_call>x"])
def test_pass_through_when_disabled(text: str) -> None:
    content, reasoning, calls, _ = run([text], reasoning=False, tools=False)
    assert (content, reasoning, calls) == (text, "", [])


def test_pass_through_streams_immediately() -> None:
    parser = OutputParser(reasoning=False, tools=False)
    assert parser.feed("Hel") == [Delta("content", "Hel")]
    assert parser.feed("lo <") == [Delta("content", "lo <")]
    assert parser.finish() == ([], [])


# --- reasoning ---------------------------------------------------------------------


def test_think_block_is_split() -> None:
    text = "<think>\nLet me think.\n</think>\n\nThe answer is 4."
    content, reasoning, calls = assert_same_for_all_splits(text, reasoning=True, tools=False)
    assert reasoning == "Let me think."
    assert content == "The answer is 4."
    assert calls == []


def test_starts_in_reasoning() -> None:
    text = "\nhmm, 2+2\n</think>\n\n4"
    content, reasoning, _ = assert_same_for_all_splits(
        text, reasoning=True, tools=False, starts_in_reasoning=True
    )
    assert (reasoning, content) == ("hmm, 2+2", "4")


def test_starts_in_reasoning_unclosed_stays_reasoning() -> None:
    content, reasoning, _, _ = run(
        ["still thinking"], reasoning=True, tools=False, starts_in_reasoning=True
    )
    assert (reasoning, content) == ("still thinking", "")


def test_starts_in_reasoning_ignored_without_reasoning() -> None:
    content, reasoning, _, _ = run(
        ["x</think>y"], reasoning=False, tools=False, starts_in_reasoning=True
    )
    assert (content, reasoning) == ("x</think>y", "")


def test_stray_close_in_content_is_dropped() -> None:
    content, reasoning, _, _ = run(["a</think> b"], reasoning=True, tools=False)
    assert (content, reasoning) == ("ab", "")


def test_reasoning_disabled_keeps_tags_as_content() -> None:
    content, reasoning, _, _ = run(["<think>x</think>y"], reasoning=False, tools=True)
    assert (content, reasoning) == ("<think>x</think>y", "")


def test_partial_tag_is_held_back_then_released() -> None:
    parser = OutputParser(reasoning=True, tools=False)
    assert parser.feed("<thi") == []
    assert parser.feed("nk>abc") == [Delta("reasoning", "abc")]
    assert parser.feed("</th") == []
    assert parser.feed("ank you") == [Delta("reasoning", "</thank you")]
    assert parser.feed("</think>done") == [Delta("content", "done")]
    assert parser.finish() == ([], [])


def test_lookalike_tag_in_content_is_released() -> None:
    parser = OutputParser(reasoning=True, tools=True)
    assert parser.feed("a <thin") == [Delta("content", "a")]
    assert parser.feed("g>") == [Delta("content", " <thing>")]
    assert parser.feed(" <tool") == []
    rest, calls = parser.finish()
    assert rest == [Delta("content", " <tool")] and calls == []


def test_empty_think_block() -> None:
    content, reasoning, _, deltas = run(["<think>\n\n</think>\n\nHi"], reasoning=True, tools=False)
    assert (content, reasoning) == ("Hi", "")
    assert all(d.text for d in deltas)


def test_deltas_of_one_feed_are_merged_by_kind() -> None:
    parser = OutputParser(reasoning=True, tools=False)
    assert parser.feed("<think>a</think>b<think>c</think>d") == [
        Delta("reasoning", "a"),
        Delta("content", "b"),
        Delta("reasoning", "c"),
        Delta("content", "d"),
    ]


def test_unicode_survives() -> None:
    content, reasoning, _ = assert_same_for_all_splits(
        "<think>日本語 🙂</think>héllo wörld", reasoning=True, tools=True
    )
    assert (reasoning, content) == ("日本語 🙂", "héllo wörld")


# --- tool calls --------------------------------------------------------------------


CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'


def test_single_tool_call() -> None:
    content, reasoning, calls = assert_same_for_all_splits(CALL, reasoning=True, tools=True)
    assert content == reasoning == ""
    assert len(calls) == 1
    assert calls[0].name == "get_weather"
    assert json.loads(calls[0].arguments) == {"city": "Paris"}
    assert calls[0].id.startswith("call_") and len(calls[0].id) > 10


def test_text_then_calls_with_reasoning() -> None:
    other = '<tool_call>{"name": "time", "arguments": {}}</tool_call>'
    text = f"<think>need tools</think>\n\nLet me check.\n{CALL}\n{other}\n"
    content, reasoning, calls = assert_same_for_all_splits(text, reasoning=True, tools=True)
    assert reasoning == "need tools"
    assert content == "Let me check."
    assert [c.name for c in calls] == ["get_weather", "time"]
    assert calls[1].arguments == "{}"
    assert calls[0].id != calls[1].id


def test_whitespace_is_kept_without_calls() -> None:
    content, _, calls, _ = run(["a\n", "\nb \n"], reasoning=False, tools=True)
    assert (content, calls) == ("a\n\nb \n", [])


def test_tool_call_inside_reasoning_is_not_extracted() -> None:
    text = f"<think>maybe {CALL}</think>ok"
    content, reasoning, calls = assert_same_for_all_splits(text, reasoning=True, tools=True)
    assert calls == [] and content == "ok" and reasoning == f"maybe {CALL}"


def test_invalid_tool_call_body_comes_back_as_content() -> None:
    text = "Hi <tool_call>not json</tool_call> bye"
    content, _, calls = assert_same_for_all_splits(text, reasoning=False, tools=True)
    assert calls == []
    assert content == text


def test_call_without_name_is_content() -> None:
    text = '<tool_call>{"arguments": {}}</tool_call>'
    content, _, calls, _ = run([text], reasoning=False, tools=True)
    assert calls == [] and content == text


def test_unterminated_valid_call_is_accepted() -> None:
    content, _, calls, _ = run(
        ['<tool_call>{"name": "f", "arguments": {"x": 1}}'], reasoning=False, tools=True
    )
    assert content == "" and [(c.name, c.arguments) for c in calls] == [("f", '{"x": 1}')]


def test_unterminated_invalid_call_is_content() -> None:
    content, _, calls, _ = run(['ok <tool_call>{"name": "f", "argu'], reasoning=False, tools=True)
    assert calls == [] and content == 'ok <tool_call>{"name": "f", "argu'


def test_tools_disabled_keeps_call_text() -> None:
    content, _, calls, _ = run([CALL], reasoning=True, tools=False)
    assert calls == [] and content == CALL


def test_string_arguments_and_parameters_key() -> None:
    a = parse_tool_call('{"name": "f", "arguments": "{\\"q\\": 2}"}')
    b = parse_tool_call('{"name": "g", "parameters": {"q": 3}}')
    assert a is not None and a.arguments == '{"q": 2}'
    assert b is not None and b.name == "g" and json.loads(b.arguments) == {"q": 3}
    assert parse_tool_call('{"name": "f", "arguments": "not json"}') is None
    assert parse_tool_call("[1, 2]") is None


def test_non_ascii_arguments_are_not_escaped() -> None:
    call = parse_tool_call('{"name": "f", "arguments": {"city": "Zürich"}}')
    assert call is not None and call.arguments == '{"city": "Zürich"}'


def test_content_before_call_streams_before_the_call_ends() -> None:
    parser = OutputParser(reasoning=False, tools=True)
    assert parser.feed("Checking.\n<tool_") == [Delta("content", "Checking.")]
    assert parser.feed('call>{"name": "f"') == []
    assert parser.tool_calls == []
    assert parser.feed(', "arguments": {}}</tool_call>') == []
    assert [c.name for c in parser.tool_calls] == ["f"]
    rest, calls = parser.finish()
    assert rest == [] and [c.name for c in calls] == ["f"]


def test_text_after_call_is_content() -> None:
    content, _, calls = assert_same_for_all_splits(f"{CALL}\n\nDone.", reasoning=False, tools=True)
    assert content == "Done." and len(calls) == 1


def test_finish_flushes_partial_tag() -> None:
    parser = OutputParser(reasoning=True, tools=True)
    assert parser.feed("x <think") == [Delta("content", "x")]
    assert parser.finish() == ([Delta("content", " <think")], [])
