"""TextStream: token bytes in, safe text out (UTF-8 joins, stop strings, held text)."""

from __future__ import annotations

import pytest
from rkllmd.backends.textstream import TextStream


def run(stream: TextStream, pieces: list[bytes]) -> list[str]:
    """Everything emitted, one entry per feed, then the finish() output."""
    return [stream.feed(p) for p in pieces] + [stream.finish()]


def test_plain_text_passes_straight_through() -> None:
    stream = TextStream(stop=())
    assert stream.feed(b"Hello") == "Hello"
    assert stream.feed(b", world") == ", world"
    assert stream.finish() == ""
    assert not stream.stopped


@pytest.mark.parametrize("char", ["é", "€", "😀", "中"])
def test_utf8_character_split_across_feeds_is_emitted_whole(char: str) -> None:
    data = char.encode()
    stream = TextStream(stop=())
    out = [stream.feed(data[i : i + 1]) for i in range(len(data))]
    assert out[:-1] == [""] * (len(data) - 1)  # nothing half-made is ever shown
    assert out[-1] == char
    assert "\ufffd" not in "".join(out)


def test_split_character_between_words() -> None:
    data = "naïve café".encode()
    cut = data.index("ï".encode()) + 1
    stream = TextStream(stop=())
    assert run(stream, [data[:cut], data[cut:]]) == ["na", "ïve café", ""]


def test_stop_string_within_one_feed_cuts_and_stops() -> None:
    stream = TextStream(stop=["<|end|>"])
    assert stream.feed(b"Hi there<|end|>ignored") == "Hi there"
    assert stream.stopped
    assert stream.feed(b"more") == ""
    assert stream.finish() == ""


def test_stop_string_across_feeds_is_never_shown() -> None:
    stream = TextStream(stop=["</s>"])
    out = run(stream, [b"answer <", b"/", b"s>", b" tail"])
    assert "".join(out) == "answer "
    assert stream.stopped
    assert out[0] == "answer "  # the "<" was held back, not the text before it


def test_held_partial_stop_is_released_when_it_does_not_match() -> None:
    stream = TextStream(stop=["STOP"])
    assert stream.feed(b"go ST") == "go "  # "ST" might begin "STOP"
    assert stream.feed(b"O") == ""  # "STO" still might
    assert stream.feed(b"RY") == "STORY"  # it did not: released in order
    assert not stream.stopped
    assert stream.finish() == ""


def test_held_partial_stop_is_flushed_at_finish() -> None:
    stream = TextStream(stop=["STOP"])
    assert stream.feed(b"the end ST") == "the end "
    assert stream.finish() == "ST"
    assert not stream.stopped


def test_earliest_of_several_stop_strings_wins() -> None:
    stream = TextStream(stop=["world", "lo w", "xyz"])
    assert "".join(run(stream, [b"hel", b"lo wor", b"ld"])) == "hel"
    assert stream.stopped


def test_overlapping_prefix_keeps_only_what_could_still_match() -> None:
    stream = TextStream(stop=["abab"])
    assert stream.feed(b"xaba") == "x"  # "aba" could become "abab"
    assert stream.feed(b"a") == "aba"  # "abaa": only the last "a" may still start it
    assert stream.feed(b"bab") == ""  # held "a" + "bab" is the stop string
    assert stream.stopped


def test_stop_string_split_inside_a_multibyte_character() -> None:
    stop = "→end"
    data = ("go " + stop + " never").encode()
    stream = TextStream(stop=[stop])
    out = [stream.feed(data[i : i + 1]) for i in range(len(data))]
    assert "".join(out) + stream.finish() == "go "
    assert stream.stopped


def test_finish_drops_an_incomplete_trailing_character() -> None:
    stream = TextStream(stop=())
    assert stream.feed(b"ok ") == "ok "
    assert stream.feed("😀".encode()[:2]) == ""  # cut off by the token budget
    assert stream.finish() == ""
    assert "\ufffd" not in stream.finish()


def test_finish_keeps_complete_text_and_drops_only_the_cut_character() -> None:
    stream = TextStream(stop=["zzz"])
    assert stream.feed(b"abc z") == "abc "
    assert stream.feed("é".encode()[:1]) == ""
    assert stream.finish() == "z"


def test_invalid_bytes_become_replacement_characters() -> None:
    stream = TextStream(stop=())
    assert stream.feed(b"a\xffb") == "a\ufffdb"


def test_empty_stop_strings_are_ignored() -> None:
    stream = TextStream(stop=["", "END"])
    assert stream.feed(b"text") == "text"
    assert not stream.stopped
