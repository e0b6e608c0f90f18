"""Pulling over HTTP: TabbyAPI's /v1/download and /v1/models/download with SSE progress."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass

import openai

from tests.store.conftest import GGUF, REPO_ID
from tests.store.hubstub import Repo

STEM = GGUF.removesuffix(".gguf")


@dataclass
class Reply:
    status_code: int
    content_type: str
    text: str

    def json(self) -> dict[str, object]:
        return json.loads(self.text)  # type: ignore[no-any-return]


def _post(
    url: str, body: dict[str, object], timeout: float = 120, accept: str = "application/json"
) -> Reply:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json", "Accept": accept},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return Reply(
                response.status, response.headers["Content-Type"], response.read().decode()
            )
    except urllib.error.HTTPError as error:
        return Reply(error.code, error.headers["Content-Type"], error.read().decode())


def _sse(text: str) -> list[object]:
    blocks = [b[len("data: ") :] for b in text.split("\n\n") if b.startswith("data: ")]
    return [b if b == "[DONE]" else json.loads(b) for b in blocks]


def test_tabby_download_then_chat(store_daemon, smol_repo: Repo) -> None:  # type: ignore[no-untyped-def]
    response = _post(store_daemon.http_url + "/v1/download", {"repo_id": REPO_ID})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["download_path"] == REPO_ID and body["result"]["models"] == [STEM]
    assert str(store_daemon.models_dir) not in response.text
    with openai.OpenAI(
        base_url=store_daemon.http_url + "/v1", api_key="x", max_retries=0
    ) as client:
        assert STEM in [m.id for m in client.models.list()]
        reply = client.chat.completions.create(
            model=STEM, messages=[{"role": "user", "content": "Hi"}], max_tokens=2
        )
    assert reply.usage is not None and reply.usage.completion_tokens == 2


def test_sse_download_progress(store_daemon, smol_repo: Repo) -> None:  # type: ignore[no-untyped-def]
    response = _post(
        store_daemon.http_url + "/v1/models/download",
        {"repo": REPO_ID},
        accept="text/event-stream",
    )
    assert response.content_type.startswith("text/event-stream")
    events = _sse(response.text)
    assert events[-1] == "[DONE]"
    final = events[-2]
    assert (
        isinstance(final, dict) and final["stage"] == "done" and final["result"]["models"] == [STEM]
    )
    progress = [e for e in events[:-2] if isinstance(e, dict)]
    assert progress and {"bytes", "total", "rate", "eta_s", "file"} <= set(progress[-1])


def test_bad_download_requests(store_daemon) -> None:  # type: ignore[no-untyped-def]
    url = store_daemon.http_url
    for body in (
        {"repo_id": "../../etc"},
        {"repo_id": "a/b", "folder_name": "x"},
        {},
        {"repo_id": "/abs/x"},
    ):
        response = _post(url + "/v1/download", body)
        assert response.status_code == 400, body
        assert response.json()["error"]["type"] == "invalid_request_error"
    missing = _post(url + "/v1/models/download", {"repo": "nobody/nothing", "stream": True})
    events = _sse(missing.text)
    assert events[-1] == "[DONE]" and isinstance(events[-2], dict) and "error" in events[-2]
    assert not [p for p in store_daemon.models_dir.iterdir() if not p.name.startswith(".")]


def test_go_client_download_answers_json(store_daemon, smol_repo: Repo) -> None:  # type: ignore[no-untyped-def]
    """The Go client's Download: the same path, a JSON client, ``download_path`` back."""
    response = _post(store_daemon.http_url + "/v1/models/download", {"repo_id": REPO_ID})
    assert response.status_code == 200 and response.content_type.startswith("application/json")
    body = response.json()
    assert isinstance(body["download_path"], str) and body["download_path"] == REPO_ID
    missing = _post(store_daemon.http_url + "/v1/models/download", {"repo_id": "nobody/nothing"})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "repo_not_found"
    assert missing.json()["message"] == missing.json()["error"]["message"]
