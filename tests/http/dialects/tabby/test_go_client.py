"""TabbyAPI's Go client (github.com/pixelsquared/go-tabbyapi) against a real daemon.

tests/fixtures/go_tabby/main.go runs the models service document's examples as written
(../shared/seeds/001_*: the same model names, bodies and keys) plus the client's other
services, and prints what the client decoded. The client's source is not part of this
repository: ``scripts/go-tabbyapi.sh`` fetches it into ~/.cache/rkllmd (or set
RKLLMD_GO_TABBYAPI to a checkout). Go 1.19 (Debian's golang-go) builds it once its
go.mod's ``go`` line is lowered in the build copy. Without Go or the source, the test
is skipped and says why.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import FAKE_BACKEND
from tests.helpers import REPO, place_model, running_daemon, short_tempdir

HARNESS = REPO / "tests" / "fixtures" / "go_tabby"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "rkllmd"
CLIENT_DIR = "go-tabbyapi-a08e4351e786"
ADMIN_KEY, API_KEY = "your-admin-key", "your-api-key"


def _client_source() -> Path | None:
    configured = os.environ.get("RKLLMD_GO_TABBYAPI")
    path = Path(configured) if configured else CACHE / CLIENT_DIR
    return path if (path / "tabby" / "client.go").is_file() else None


def _build(source: Path, out: Path) -> Path:
    go = shutil.which("go")
    if go is None:
        pytest.skip("no Go toolchain (apt install golang-go)")
    build = out / "harness"
    shutil.copytree(HARNESS, build)
    shutil.copytree(source, build / "client", ignore=shutil.ignore_patterns(".git"))
    version = subprocess.run([go, "env", "GOVERSION"], capture_output=True, text=True, check=True)
    minor = ".".join(version.stdout.strip().removeprefix("go").split(".")[:2])
    mod = build / "client" / "go.mod"
    lines = [
        "go " + minor if line.startswith("go ") else line for line in mod.read_text().splitlines()
    ]
    mod.write_text("\n".join(lines) + "\n")
    env = {
        **os.environ,
        "GOPROXY": "off",
        "GOFLAGS": "-mod=mod",
        "GOTOOLCHAIN": "local",
        "GOCACHE": str(CACHE / "go-build"),
    }
    subprocess.run([go, "build", "-o", str(out / "go-tabby"), "."], cwd=build, env=env, check=True)
    return out / "go-tabby"


@pytest.fixture(scope="module")
def harness() -> Iterator[Path]:
    source = _client_source()
    if source is None:
        pytest.skip("TabbyAPI's Go client is not fetched: run scripts/go-tabbyapi.sh")
    out = short_tempdir()
    try:
        yield _build(source, out)
    finally:
        shutil.rmtree(out, ignore_errors=True)


def _models(root: Path) -> Path:
    """The document's model names, each the test model under that name, and a draft
    model in the draft folder."""
    models = root / "models"
    (models / "BAAI").mkdir(parents=True)
    (models / "draft").mkdir()
    for name in ("mistral-7b-v0.1", "llama2-70b", "BAAI/bge-small-en-v1.5", "draft/tiny-draft"):
        place_model(models, f"{name}.gguf")  # a path names a model too: BAAI/bge-...
    sidecar = {"type": "embedding"}
    (models / "BAAI" / "bge-small-en-v1.5.rkllmd.json").write_text(json.dumps(sidecar))
    return models


def test_the_models_service_examples(harness: Path) -> None:
    from tests.store.hubstub import HubStub

    hub = HubStub().start()
    hub.add_repo(
        "microsoft/phi-2",
        {"phi-2.Q4_0.gguf": b"GGUF" + bytes(60), "config.json": b'{"model_type": "phi"}'},
    )
    root = short_tempdir()
    env = {
        "RKLLMD_HTTP__ADMIN_KEY": ADMIN_KEY,
        "RKLLMD_HTTP__API_KEY": API_KEY,
        "RKLLMD_HUB__ENDPOINT": hub.url,
        "RKLLMD_HUB__MIN_FREE_BYTES": "0",
        "RKLLMD_LLAMACPP__PARALLEL": "2",  # props' total_slots
    }
    try:
        with running_daemon(_models(root), env=env, args=["--load", "llama2-70b"]) as daemon:
            run = subprocess.run(
                [str(harness), daemon.http_url, ADMIN_KEY, API_KEY],
                capture_output=True,
                text=True,
                timeout=600,
                check=True,
            )
    finally:
        hub.stop()
        shutil.rmtree(root, ignore_errors=True)
    steps = {s["step"]: s for s in map(json.loads, run.stdout.splitlines())}
    _check(steps)


def ok(steps: dict[str, Any], name: str) -> dict[str, Any]:
    step = steps[name]
    assert step["ok"], step
    return step


def failed(steps: dict[str, Any], name: str, code: str) -> dict[str, Any]:
    step = steps[name]
    assert not step["ok"] and step["code"] == code, step
    return step


def _check(steps: dict[str, Any]) -> None:
    listed = ok(steps, "list")
    # The client's List reads OpenAI's /v1/models: every model, the draft too (its card
    # says type "draft"; TabbyAPI's own /v1/model/list leaves drafts out).
    assert set(listed["ids"]) == {
        "mistral-7b-v0.1",
        "llama2-70b",
        "bge-small-en-v1.5",
        "tiny-draft",
    }
    assert listed["owned_by"] == "rkllmd" and listed["created"] > 0
    assert ok(steps, "list_draft")["ids"] == ["tiny-draft"]  # the admin key sees the folder
    assert ok(steps, "get")["id"] == "llama2-70b"
    props = ok(steps, "props")
    # llama.cpp runs RKLLMD_LLAMACPP__PARALLEL sequences; the fast tier's fake backend one.
    slots = 1 if FAKE_BACKEND else 2
    assert props["total_slots"] == slots and props["chat_template_length"] > 0
    assert props["n_ctx"] > 0

    assert ok(steps, "load")["status"] == "finished"
    after = ok(steps, "get_after_load")
    assert after == {**after, "id": "mistral-7b-v0.1", "prompt_template": "mistral"}
    # The documented limitation: LoadStream sends Load's request (Accept:
    # application/json) and gets the JSON answer once the load is done; its stream
    # reader takes no event from it, so the example's loop ends without progress...
    assert ok(steps, "load_stream")["events"] == 0
    # ...and the model is loaded.
    assert ok(steps, "get_after_stream")["id"] == "llama2-70b"

    assert failed(steps, "load_with_api_key", "permission_error")["status"] == 403
    assert "not found" in failed(steps, "load_unknown", "not_found")["error"]
    assert "mistral" in failed(steps, "load_bad_template", "invalid_request")["error"]
    assert ok(steps, "permission_api")["permission"] == "api"
    assert ok(steps, "permission_admin")["permission"] == "admin"

    assert "bge-small-en-v1.5" in ok(steps, "list_embedding")["ids"]
    assert ok(steps, "load_embedding")["model_type"] == "embedding_model"
    assert ok(steps, "get_embedding")["id"] == "bge-small-en-v1.5"
    assert ok(steps, "embeddings") == {**steps["embeddings"], "model": "bge-small-en-v1.5"}
    assert ok(steps, "chat")["model"] == "llama2-70b"  # the chat model kept serving

    # As written, the example asks for safetensors only: nothing rkllmd can serve.
    assert "*.safetensors" in failed(steps, "download_as_written", "not_found")["error"]
    assert ok(steps, "download_gguf")["download_path"] == "microsoft/phi-2"

    assert {"chatml", "mistral"} <= set(ok(steps, "templates")["names"])
    for name in ("template_switch", "template_unload", "lora_unload", "override_switch"):
        ok(steps, name)
    failed(steps, "template_switch_api_key", "permission_error")
    tokens = ok(steps, "tokens")
    assert tokens["length"] == tokens["count"] > 0 and "Hello world" in tokens["text"]
    assert ok(steps, "loras")["ids"] == []
    assert ok(steps, "lora_load") == {
        **steps["lora_load"],
        "success": [],
        "failure": ["no-such-adapter"],
    }
    assert ok(steps, "lora_active")["count"] == 0
    overrides = ok(steps, "overrides")
    assert overrides["overrides"]["max_tokens"]["override"] == 3 and overrides["presets"] == []
    ok(steps, "override_unload")
    assert ok(steps, "health")["status"]

    ok(steps, "unload_embedding")
    failed(steps, "get_embedding_after_unload", "invalid_request")
    ok(steps, "unload")
    failed(steps, "get_after_unload", "invalid_request")
