"""The model store over HTTP: DELETE /v1/models/{id} and POST /v1/models/clean, with
the guards of ``rkllmctl rm`` (loaded, pinned, being pulled, names that lead outside),
against a real daemon; the openai client's ``models.delete`` works as is."""

from __future__ import annotations

import http.client
import json
import os
from pathlib import Path
from typing import Any

import openai
import requests

from tests.helpers import MODEL_ID, DaemonProcess, place_model
from tests.store.conftest import GGUF, REPO_ID, hub_env, pull, tree
from tests.store.hubstub import HubStub, Repo

STEM = GGUF.removesuffix(".gguf")


def delete(daemon: DaemonProcess, path: str, **headers: str) -> tuple[int, dict[str, Any]]:
    """A DELETE with the path sent exactly as given (no client-side normalisation)."""
    conn = http.client.HTTPConnection("127.0.0.1", daemon.http_port, timeout=60)
    try:
        conn.request("DELETE", path, headers=headers)
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        conn.close()


def cards(daemon: DaemonProcess) -> list[str]:
    return [c["id"] for c in requests.get(f"{daemon.http_url}/v1/models").json()["data"]]


def test_delete_a_pulled_model_with_its_files(store_daemon: DaemonProcess, smol_repo: Repo) -> None:
    pull(store_daemon, repo=REPO_ID)
    assert cards(store_daemon) == [STEM]
    status, body = delete(store_daemon, f"/v1/models/{STEM}")
    assert status == 200
    assert (body["id"], body["object"], body["deleted"]) == (STEM, "model", True)
    assert set(body["files"]) == {
        f"{REPO_ID}/{GGUF}",
        f"{REPO_ID}/config.json",
        f"{REPO_ID}/tokenizer_config.json",
    }
    assert tree(store_daemon.models_dir) == {".staging"}
    assert cards(store_daemon) == []
    status, body = delete(store_daemon, f"/v1/models/{STEM}")
    assert status == 404 and body["error"]["code"] == "model_not_found"


def test_the_openai_client_deletes(store_daemon: DaemonProcess, smol_repo: Repo) -> None:
    pull(store_daemon, repo=REPO_ID)
    with openai.OpenAI(base_url=f"{store_daemon.http_url}/v1", api_key="x") as client:
        deleted = client.models.delete("smollm2")  # any name that resolves
    assert (deleted.id, deleted.deleted, deleted.object) == (STEM, True, "model")
    assert cards(store_daemon) == []


def test_loaded_and_pinned_models_need_force(start_daemon, models_dir: Path) -> None:  # type: ignore[no-untyped-def]
    place_model(models_dir)
    place_model(models_dir, "pinned-copy.gguf")
    daemon = start_daemon(
        models_dir, args=["--load", "smollm2"], env={"RKLLMD_GENERATION__PIN": "pinned-copy"}
    )
    status, body = delete(daemon, f"/v1/models/{MODEL_ID}")
    assert status == 409 and body["error"]["code"] == "model_in_use"
    assert body["error"]["details"]["model"] == MODEL_ID
    status, body = delete(daemon, "/v1/models/pinned-copy")  # pinned, though not loaded
    assert status == 409 and body["error"]["code"] == "model_pinned"
    assert body["error"]["details"]["pinned"] == "pinned-copy"
    status, body = delete(daemon, "/v1/models/pinned-copy?force=maybe")
    assert status == 400 and body["error"]["param"] == "force"
    assert sorted(cards(daemon)) == sorted([MODEL_ID, "pinned-copy"])  # nothing went

    status, body = delete(daemon, f"/v1/models/{MODEL_ID}?force=true")
    assert status == 200 and body["files"] == [f"{MODEL_ID}.gguf"]
    assert daemon.call("status")["state"] == "idle"  # unloaded first
    status, body = delete(daemon, "/v1/models/pinned-copy?force=true")
    assert status == 200 and cards(daemon) == []


def test_names_that_lead_outside_are_refused(start_daemon, models_dir: Path) -> None:  # type: ignore[no-untyped-def]
    place_model(models_dir)
    outside = models_dir.parent / "outside"
    outside.mkdir()
    secret = outside / "secret.gguf"
    secret.write_bytes(b"GGUF\x03\x00\x00\x00secret")
    (models_dir / "evil.gguf").symlink_to(secret)
    daemon = start_daemon(models_dir)
    for path in (
        "/v1/models/..%2F..%2Fetc%2Fpasswd",
        "/v1/models/%2E%2E%2Foutside%2Fsecret",
        "/v1/models/sub%2F..%2F..%2Foutside%2Fsecret",
        "/v1/models/evil",
        "/v1/models/evil.gguf",
    ):
        status, body = delete(daemon, path)
        assert status == 400, path
        assert body["error"]["code"] == "invalid_model_name", path
    status, body = delete(daemon, "/v1/models/../outside/secret")  # sent as is
    assert status == 400 and body["error"]["code"] == "invalid_model_name"
    assert secret.read_bytes().endswith(b"secret") and (models_dir / "evil.gguf").is_symlink()
    assert cards(daemon) == [MODEL_ID]


def test_clean_removes_everything_with_the_same_guards(
    start_daemon, models_dir: Path, hub: HubStub, smol_repo: Repo
) -> None:  # type: ignore[no-untyped-def]
    place_model(models_dir, "local.gguf")
    daemon = start_daemon(models_dir, args=["--load", "local"], env=hub_env(hub))
    pull(daemon, repo=REPO_ID)
    url = f"{daemon.http_url}/v1/models/clean"
    refused = requests.post(url, json={})
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "model_in_use"
    empty = requests.post(url)  # no body: refused, it would remove everything
    assert empty.status_code == 400 and empty.json()["error"]["param"] == "force"
    bad = requests.post(url, json={"force": "yes"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "force"
    assert len(cards(daemon)) == 2

    done = requests.post(url, json={"force": True})
    body = done.json()
    assert done.status_code == 200 and body["count"] == 2
    assert sorted(body["removed"]) == sorted(["local", STEM])
    assert f"{REPO_ID}/{GGUF}" in body["files"] and "local.gguf" in body["files"]
    assert cards(daemon) == [] and daemon.call("status")["state"] == "idle"
    assert not any(p.name != ".staging" for p in models_dir.iterdir())
    assert requests.post(url, json={}).json() == {"removed": [], "files": [], "count": 0}


def test_management_key_is_needed(start_daemon, models_dir: Path) -> None:  # type: ignore[no-untyped-def]
    place_model(models_dir)
    env = {"RKLLMD_HTTP__API_KEY": "user-key", "RKLLMD_HTTP__ADMIN_KEY": "admin-key"}
    daemon = start_daemon(models_dir, env=env)
    status, body = delete(daemon, f"/v1/models/{MODEL_ID}")
    assert status == 401
    status, body = delete(daemon, f"/v1/models/{MODEL_ID}", Authorization="Bearer user-key")
    assert status == 403 and body["error"]["type"] == "permission_error"
    clean = requests.post(
        f"{daemon.http_url}/v1/models/clean", json={}, headers={"X-Api-Key": "user-key"}
    )
    assert clean.status_code == 403
    assert os.path.exists(models_dir / f"{MODEL_ID}.gguf")
    status, body = delete(daemon, f"/v1/models/{MODEL_ID}", Authorization="Bearer admin-key")
    assert status == 200 and body["deleted"] is True
