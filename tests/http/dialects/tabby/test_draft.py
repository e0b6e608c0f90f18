"""TabbyAPI's draft models (speculative decoding): the load's ``draft_model`` object,
the current card's ``parameters.draft``, the draft list by key, and the refusals
(fast tier: the fake backend takes the draft's file without drafting)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.helpers import MODEL_ID
from tests.http.conftest import manager_of
from tests.http.dialects.tabby.conftest import ADMIN, KEYS, USER, decodes_card

DRAFT = "tiny-draft"


def _settled(path: Path, data: bytes | None = None, source: Path | None = None) -> None:
    """A model file the catalogue takes at once (old mtime): a hard link of ``source``
    or ``data``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if source is not None:
        os.link(source, path)
    else:
        path.write_bytes(data or b"")
    old = time.time() - 60
    os.utime(path, (old, old))


@pytest.fixture
def draft_dir(smol_dir: Path) -> Path:
    """The test model, and itself again as ``draft/tiny-draft.gguf``."""
    _settled(smol_dir / "draft" / f"{DRAFT}.gguf", source=smol_dir / f"{MODEL_ID}.gguf")
    return smol_dir


def _load(model: str = "smollm2", **draft: object) -> dict[str, object]:
    return {"model_name": model, "draft_model": {"draft_model_name": DRAFT, **draft}}


def _pid(client) -> int | None:  # type: ignore[no-untyped-def]
    return manager_of(client).status().worker_pid


@pytest.mark.parametrize("path", ["/v1/models/load", "/v1/model/load"])
async def test_a_load_with_a_draft_shows_it_on_the_card_and_in_the_list(
    make_client, draft_dir: Path, path: str
) -> None:
    client = await make_client(http=KEYS)
    answer = await client.post(path, json=_load(draft_rope_scale=2.0), headers=ADMIN)
    assert answer.status == 200, await answer.text()
    text = await answer.text()
    assert "draft_rope_scale does not apply" in text  # named in the notes, not dropped
    assert manager_of(client).status().resident.options.draft_model == DRAFT  # type: ignore[union-attr]
    card = await (await client.get("/v1/models/current", headers=USER)).json()
    decodes_card(card)
    draft = card["parameters"]["draft"]
    decodes_card(draft)
    assert draft["id"] == DRAFT and draft["parameters"]["max_seq_len"] == card["parameters"][
        "max_seq_len"
    ]
    # TabbyAPI: the admin key lists the draft folder, an API key the draft in use.
    for headers in (ADMIN, USER):
        listed = await (await client.get("/v1/model/draft/list", headers=headers)).json()
        assert [c["id"] for c in listed["data"]] == [DRAFT]
        decodes_card(listed["data"][0])


async def test_the_draft_is_part_of_the_load_options(make_client, draft_dir: Path) -> None:
    client = await make_client(http=KEYS)
    plain = _pid(client)
    await client.post("/v1/models/load", json=_load(), headers=ADMIN)
    drafted = _pid(client)
    assert drafted != plain  # a draft where there was none: a reload
    await client.post("/v1/models/load", json=_load(), headers=ADMIN)
    assert _pid(client) == drafted  # the same draft: a no-op
    tokens = await client.post("/v1/models/load", json=_load(draft_num_tokens=4), headers=ADMIN)
    assert tokens.status == 200
    resident = manager_of(client).status().resident
    assert resident is not None and resident.options.draft_tokens == 4
    await client.post("/v1/models/load", json={"model_name": "smollm2"}, headers=ADMIN)
    card = await (await client.get("/v1/models/current", headers=USER)).json()
    assert "draft" not in card["parameters"]  # loading without one drops it
    assert (await (await client.get("/v1/models/draft", headers=USER)).json())["data"] == []


async def test_draft_refusals_leave_the_model_serving(make_client, draft_dir: Path) -> None:
    _settled(draft_dir / "draft" / "npu-draft.rkllm", b"\x00" * 4096)
    _settled(draft_dir / "npu-chat.rkllm", b"\x00" * 4096)
    client = await make_client(http=KEYS)
    before = _pid(client)
    cases = [
        (_load(draft_model_name="nope"), 404, "model_not_found"),
        (_load(draft_model_name="npu-draft"), 400, "draft_incompatible"),
        (_load("npu-chat"), 400, "draft_incompatible"),  # the NPU runtime has no drafts
        ({"model_name": "smollm2", "draft_model": {}}, 400, "invalid_params"),
        (_load(draft_num_tokens=0), 400, "invalid_params"),
        ({"model_name": "smollm2", "draft_model": "tiny-draft"}, 400, "invalid_params"),
    ]
    for body, status, code in cases:
        answer = await client.post("/v1/models/load", json=body, headers=ADMIN)
        error = await answer.json()
        assert answer.status == status and error["error"]["code"] == code, (body, error)
        assert error["message"] == error["error"]["message"]  # the Go client's field
    incompatible = await client.post("/v1/model/load", json=_load("npu-chat"), headers=ADMIN)
    assert incompatible.status == 400  # refused before the stream starts
    assert "NPU" in (await incompatible.json())["message"]
    assert _pid(client) == before and manager_of(client).status().model == MODEL_ID


async def test_an_api_key_may_not_load_a_draft(make_client, draft_dir: Path) -> None:
    client = await make_client(http=KEYS)
    answer = await client.post("/v1/models/load", json=_load(), headers=USER)
    assert answer.status == 403
    assert manager_of(client).status().resident.options.draft_model is None  # type: ignore[union-attr]


async def test_the_name_alias_and_the_ids_of_other_folders(make_client, draft_dir: Path) -> None:
    """TabbyAPI accepts ``name`` for ``draft_model_name``; any GGUF of the catalogue
    may draft (the engine checks its vocabulary), the card names it by its id."""
    client = await make_client()
    body = {"model_name": "smollm2", "draft_model": {"name": MODEL_ID}}
    answer = await client.post("/v1/models/load", json=body)
    assert answer.status == 200, await answer.text()
    card = await (await client.get("/v1/model")).json()
    assert card["parameters"]["draft"]["id"] == MODEL_ID


def _other_vocabulary(source: Path, target: Path) -> Path:
    """A copy of ``source`` with one token's text changed (same length, so the file
    stays valid): a model llama.cpp loads whose vocabulary differs from the original."""
    import gguf

    reader = gguf.GGUFReader(str(source))
    tokens = reader.fields["tokenizer.ggml.tokens"]
    part = tokens.parts[tokens.data[10 * max(1, len(tokens.data) // 256)]]
    offset = part.__array_interface__["data"][0] - reader.data.__array_interface__["data"][0]
    last = offset + len(part) - 1
    data = bytearray(source.read_bytes())
    data[last] = ord("Q") if data[last] != ord("Q") else ord("R")
    del reader
    _settled(target, bytes(data))
    return target


@pytest.mark.real_model
async def test_a_model_drafting_for_itself_keeps_greedy_text_and_counts_drafts(
    make_client, draft_dir: Path
) -> None:
    """SmolLM2 drafting for itself: every drafted token is accepted, and the greedy
    text is the one decoded without a draft."""
    client = await make_client(llamacpp={"parallel": 1})

    async def reply() -> dict[str, object]:
        body = {
            "model": "smollm2",
            "messages": [{"role": "user", "content": "Count from one to ten in words."}],
            "max_tokens": 24,
            "temperature": 0,
        }
        answer = await client.post("/v1/chat/completions", json=body)
        assert answer.status == 200, await answer.text()
        return dict(await answer.json())

    plain = await reply()
    assert "timings" not in plain
    loaded = await client.post("/v1/models/load", json=_load(draft_num_tokens=4))
    assert loaded.status == 200, await loaded.text()
    card = await (await client.get("/v1/model")).json()
    assert card["parameters"]["draft"]["parameters"]["draft_tokens"] == 4
    drafted = await reply()
    assert drafted["choices"] == plain["choices"]  # type: ignore[comparison-overlap]
    timings = drafted["timings"]
    assert isinstance(timings, dict) and timings["draft_n"] > 0
    assert timings["draft_n_accepted"] == timings["draft_n"]


@pytest.mark.real_model
async def test_a_draft_with_another_vocabulary_is_refused_and_the_model_comes_back(
    make_client, draft_dir: Path
) -> None:
    _other_vocabulary(draft_dir / f"{MODEL_ID}.gguf", draft_dir / "draft" / "odd-vocab.gguf")
    client = await make_client(llamacpp={"parallel": 1})
    answer = await client.post("/v1/models/load", json=_load(draft_model_name="odd-vocab"))
    body = await answer.json()
    assert answer.status == 400 and body["error"]["code"] == "draft_incompatible", body
    assert "vocabulary" in body["message"]
    assert body["error"]["details"]["restored"] == MODEL_ID
    status = manager_of(client).status()
    assert status.model == MODEL_ID and status.state.value == "ready"
    assert status.resident is not None and status.resident.options.draft_model is None


@pytest.mark.real_model
async def test_the_configured_draft_shows_on_the_card(make_client, draft_dir: Path) -> None:
    """``[llamacpp] draft_model`` drafts for every GGUF load that names none: the card
    and an API key's draft list show it."""
    client = await make_client(http=KEYS, llamacpp={"parallel": 1, "draft_model": DRAFT})
    card = await (await client.get("/v1/model", headers=USER)).json()
    assert card["parameters"]["draft"]["id"] == DRAFT
    assert card["parameters"]["draft"]["parameters"]["draft_tokens"] >= 1
    listed = await (await client.get("/v1/models/draft", headers=USER)).json()
    assert [c["id"] for c in listed["data"]] == [DRAFT]
