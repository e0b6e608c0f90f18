"""The llama.cpp engine behind a real daemon: parallel slots through HTTP with the
official openai client, the queue and 503 per generation, choices and
log-probabilities on the wire, and a worker crash with sequences in flight."""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import openai
import pytest
import requests

from tests.helpers import DaemonProcess, wait_for

pytestmark = pytest.mark.real_model

QUESTIONS = [
    "Write a haiku about the sea.",
    "What is the capital of France?",
    "List three primary colors.",
    "Explain what a compiler does.",
]


def start(start_daemon: Any, smol_dir: Path, parallel: int, waiting: int = 8) -> DaemonProcess:
    env = {
        "RKLLMD_LLAMACPP__THREADS": "1",
        "RKLLMD_LLAMACPP__CTX_SIZE": "1024",
        "RKLLMD_LLAMACPP__PARALLEL": str(parallel),
        "RKLLMD_QUEUE__MAX_WAITING": str(waiting),
    }
    daemon: DaemonProcess = start_daemon(smol_dir, args=["--load", "smollm2"], env=env)
    return daemon


@pytest.fixture
def four(start_daemon: Any, smol_dir: Path) -> DaemonProcess:
    return start(start_daemon, smol_dir, parallel=4)


@pytest.fixture
def client(four: DaemonProcess) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=four.http_url + "/v1", api_key="x", max_retries=0) as client:
        yield client


def ask(client: openai.OpenAI, question: str, **extra: Any) -> Any:
    return client.chat.completions.create(
        model="smollm2",
        messages=[{"role": "user", "content": question}],
        **{"max_tokens": 40, "temperature": 0, **extra},
    )


def streamed_text(client: openai.OpenAI, question: str) -> str:
    stream = ask(client, question, stream=True)
    return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)


def test_concurrent_streams_over_http_give_each_its_own_answer(
    four: DaemonProcess, client: openai.OpenAI
) -> None:
    alone = [streamed_text(client, q) for q in QUESTIONS]
    assert four.call("status")["slots"] == {"total": 4, "busy": 0, "free": 4}
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda q: streamed_text(client, q), QUESTIONS))
    assert together == alone
    counters = four.call("status")["counters"]
    assert counters["completed"] == 8


def test_a_second_turn_reports_the_prompt_it_reused(client: openai.OpenAI) -> None:
    first = ask(client, "Name a fruit.", max_tokens=8)
    history = [
        {"role": "user", "content": "Name a fruit."},
        {"role": "assistant", "content": first.choices[0].message.content},
        {"role": "user", "content": "And a vegetable?"},
    ]
    second = client.chat.completions.create(
        model="smollm2", messages=history, max_tokens=8, temperature=0
    )
    details = second.usage.prompt_tokens_details
    assert details is not None and details.cached_tokens >= first.usage.prompt_tokens
    assert details.cached_tokens < second.usage.prompt_tokens


def test_n_choices_share_one_prompt(client: openai.OpenAI) -> None:
    single = ask(client, QUESTIONS[2], max_tokens=16)
    three = ask(client, QUESTIONS[2], max_tokens=16, n=3)
    assert [c.index for c in three.choices] == [0, 1, 2]
    assert {c.message.content for c in three.choices} == {single.choices[0].message.content}
    assert three.usage.prompt_tokens == single.usage.prompt_tokens
    assert three.usage.completion_tokens == 3 * single.usage.completion_tokens
    sampled = ask(client, "Tell me a story.", max_tokens=16, n=3, temperature=1.0, seed=5)
    assert len({c.message.content for c in sampled.choices}) > 1
    stream = ask(client, QUESTIONS[2], max_tokens=16, n=2, stream=True)
    texts = ["", ""]
    finishes: dict[int, str] = {}
    for chunk in stream:
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
            if choice.finish_reason:
                finishes[choice.index] = choice.finish_reason
    assert texts == [single.choices[0].message.content] * 2
    assert set(finishes) == {0, 1}


def test_more_choices_than_slots_is_a_clear_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        ask(client, QUESTIONS[0], n=5)
    assert err.value.body["code"] == "invalid_params"  # type: ignore[index]
    assert err.value.body["param"] == "n"  # type: ignore[index]


def test_logprobs_on_the_wire(client: openai.OpenAI, four: DaemonProcess) -> None:
    reply = ask(client, "Count to five.", max_tokens=12, logprobs=True, top_logprobs=2)
    content = reply.choices[0].logprobs.content
    assert len(content) == reply.usage.completion_tokens
    assert "".join(t.token for t in content) == reply.choices[0].message.content
    for token in content:
        assert token.top_logprobs[0].token == token.token
        assert token.logprob == pytest.approx(token.top_logprobs[0].logprob)
        assert token.top_logprobs[0].logprob >= token.top_logprobs[1].logprob
    legacy = requests.post(
        four.http_url + "/v1/completions",
        json={"prompt": "One, two,", "max_tokens": 6, "temperature": 0, "logprobs": 2},
        timeout=60,
    ).json()
    lp = legacy["choices"][0]["logprobs"]
    assert len(lp["tokens"]) == len(lp["token_logprobs"]) == len(lp["top_logprobs"]) == 6
    assert "".join(lp["tokens"]) == legacy["choices"][0]["text"]
    assert lp["text_offset"][0] == 0


def test_the_queue_and_503_count_generations_not_requests(
    start_daemon: Any, smol_dir: Path
) -> None:
    daemon = start(start_daemon, smol_dir, parallel=2, waiting=1)
    body = {
        "model": "smollm2",
        "messages": [{"role": "user", "content": "Say hello"}],
        "max_tokens": 1000,
        "temperature": 0,
        "stream": True,
        "ignore_eos": True,
    }
    sessions = [requests.Session() for _ in range(3)]
    url = daemon.http_url + "/v1/chat/completions"
    running: list[requests.Response] = []
    try:
        running += [s.post(url, json=body, stream=True, timeout=120) for s in sessions[:2]]
        # The line iterators stay referenced: urllib3 closes the connection when a
        # chunked read's generator is dropped, and the daemon would see a hang-up.
        streams = [response.iter_lines() for response in running]
        for response, lines in zip(running, streams, strict=True):
            assert response.status_code == 200
            next(lines)  # both generate at once: two slots
        assert daemon.call("status")["slots"]["busy"] == 2
        queued = threading.Thread(
            target=lambda: sessions[2].post(url, json=body, stream=True, timeout=120).close()
        )
        queued.start()
        wait_for(lambda: daemon.call("status")["queue"]["waiting"] == 1, 30, "one waiting")
        refused = requests.post(url, json=body, timeout=30)
        assert refused.status_code == 503
        assert int(refused.headers["Retry-After"]) > 0
        assert refused.json()["error"]["code"] == "queue_full"
        metrics = requests.get(daemon.http_url + "/metrics", timeout=30).text
        assert 'rkllmd_slots{state="busy"} 2.0' in metrics
    finally:
        for response in running:  # a streaming response holds its connection outside the pool
            response.close()
        for session in sessions:
            session.close()
    # Hanging up frees the slots: every generation ends as aborted.
    wait_for(lambda: daemon.call("status")["slots"]["busy"] == 0, 60, "the slots to free")
    wait_for(lambda: daemon.call("status")["counters"]["aborted"] == 3, 60, "three aborted")


def test_a_worker_crash_fails_every_sequence_in_flight_and_the_daemon_recovers(
    four: DaemonProcess,
) -> None:
    body = {
        "model": "smollm2",
        "messages": [{"role": "user", "content": "Say hello"}],
        "max_tokens": 2000,
        "temperature": 0,
        "stream": True,
        "ignore_eos": True,
    }
    url = four.http_url + "/v1/chat/completions"
    streaming = threading.Barrier(5)

    def one() -> list[dict[str, Any]]:
        events = []
        with requests.post(url, json=body, stream=True, timeout=120) as response:
            lines = (line for line in response.iter_lines() if line.startswith(b"data: {"))
            events.append(json.loads(next(lines)[6:]))
            streaming.wait(60)
            events.extend(json.loads(line[6:]) for line in lines)
        return events

    with ThreadPoolExecutor(4) as pool:
        streams = [pool.submit(one) for _ in range(4)]
        streaming.wait(60)  # all four are streaming
        assert four.call("status")["slots"]["busy"] == 4
        os.kill(four.call("status")["worker_pid"], signal.SIGKILL)
        outcomes = [s.result() for s in streams]
    for events in outcomes:
        assert events[-1]["error"]["code"] == "backend_crashed"
    status = four.call("status")
    assert status["state"] == "failed" and status["counters"]["failed"] == 4
    with openai.OpenAI(base_url=four.http_url + "/v1", api_key="x", max_retries=0) as client:
        assert ask(client, QUESTIONS[1], max_tokens=8).choices[0].message.content
    assert four.call("status")["state"] == "ready"
