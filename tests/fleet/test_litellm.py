"""Model-aware routing: LiteLLM's proxy with docs/scale-out.md's configuration.

Three daemons on the librkllmrt double hold the models the page names (two with the
7B, one with the 1.5B). LiteLLM's proxy runs the page's YAML with only the
``api_base`` hosts changed to the daemons' loopback ports. Its executable comes from
``RKLLMD_TEST_LITELLM`` (``make test-fleet`` builds a private venv for it).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest

from tests.fleet.harness import DOC, Instance, start_instance
from tests.helpers import free_port, short_tempdir, wait_for

BIG = "Qwen2.5-7B-Instruct_W8A8_RK3588"
SMALL = "Qwen2.5-1.5B-Instruct_W8A8_RK3576"
MASTER_KEY = "sk-rkllmd-fleet-test-0123456789abcdef"
# Where each documented host is found in this test.
HOSTS = {"rk3588-1.lan": 0, "rk3588-2.lan": 1, "rk3576-1.lan": 2}


def documented_yaml() -> str:
    found = re.search(r"```yaml\n(model_list:.*?)```", DOC.read_text(), re.S)
    if found is None:
        raise AssertionError(f"{DOC} has no LiteLLM model_list block")
    return found.group(1)


def litellm_executable() -> str:
    path = os.environ.get("RKLLMD_TEST_LITELLM", "")
    if not os.access(path, os.X_OK):
        pytest.fail("RKLLMD_TEST_LITELLM names no litellm executable: run `make test-fleet`")
    return path


@contextlib.contextmanager
def litellm_proxy(instances: list[Instance]) -> Iterator[str]:
    config = documented_yaml()
    for host, index in HOSTS.items():
        config = config.replace(f"http://{host}:8080", instances[index].daemon.http_url)
    workdir = short_tempdir()
    (workdir / "litellm.yaml").write_text(config)
    port = free_port()
    env = {
        **os.environ,
        "LITELLM_MASTER_KEY": MASTER_KEY,
        "RKLLMD_KEY": "unused",  # the loopback daemons have no key; the YAML reads one
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no download at start
        "LITELLM_TELEMETRY": "False",
    }
    argv = [litellm_executable(), "--config", str(workdir / "litellm.yaml")]
    with (workdir / "litellm.log").open("wb") as log:
        proc = subprocess.Popen(
            [*argv, "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError((workdir / "litellm.log").read_text(errors="replace"))
        try:
            with urllib.request.urlopen(f"{url}/health/liveliness", timeout=2):
                return True
        except OSError:
            return False

    try:
        wait_for(up, 90, "LiteLLM's proxy", interval=0.25)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def boards() -> Iterator[list[Instance]]:
    loads = [BIG, BIG, SMALL]
    instances = [
        start_instance(f"r{n}", 20_000, {}, [BIG, SMALL], load=model)
        for n, model in enumerate(loads, 1)
    ]
    try:
        for instance in instances:
            instance.daemon.wait_ready(90)
        yield instances
    finally:
        for instance in instances:
            instance.daemon.stop()
            shutil.rmtree(Path(instance.models).parent, ignore_errors=True)


def ask(url: str, model: str, tokens: int) -> str:
    with openai.OpenAI(base_url=url + "/v1", api_key=MASTER_KEY, max_retries=0) as client:
        reply = client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": f"[[repeat:{tokens}]]"}],
            max_tokens=tokens,
        )
    text = reply.choices[0].message.content or ""
    assert text.strip() == " ".join(["tok"] * tokens), text
    return model


def test_litellm_routes_each_model_to_its_boards(boards: list[Instance]) -> None:
    with litellm_proxy(boards) as url:
        requests = ["qwen2.5-7b"] * 8 + ["qwen2.5-1.5b"] * 4
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda model: ask(url, model, 10), requests))
    big1, big2, small = boards
    # Each request ran on a board holding its model, and no board swapped its model.
    assert big1.runs() + big2.runs() == 8
    assert big1.runs() > 0 and big2.runs() > 0, (big1.runs(), big2.runs())
    assert small.runs() == 4
    for board in boards:
        inits = board.calls.calls("rkllm_init")
        assert len(inits) == 1, [c["model_path"] for c in inits]
