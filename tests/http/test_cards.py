"""Model metadata (the owner's sidecar, a pulled repo's meta.json/config.json) reaches
every HTTP listing: the cards of /v1/models and /v1/models/{id}, TabbyAPI's lists, and
the ``?type=`` filter. Nothing is loaded: the cards come from the catalogue alone."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from tests.helpers import MODEL_ID, place_model

SETTLED = time.time() - 60


def _hub_model(models_dir: Path) -> None:
    """A pulled-looking repo folder whose config.json says it is an encoder."""
    folder = models_dir / "acme" / "speechy"
    folder.mkdir(parents=True)
    place_model(folder, "speechy.gguf")
    (folder / "config.json").write_text(
        json.dumps({"model_type": "whisper", "max_position_embeddings": 448})
    )
    (folder / "meta.json").write_text(json.dumps({"name": "Speechy", "description": "Hears"}))
    for name in ("config.json", "meta.json"):
        os.utime(folder / name, (SETTLED, SETTLED))


def _sidecar(models_dir: Path) -> None:
    sidecar = models_dir / f"{MODEL_ID}.rkllmd.json"
    sidecar.write_text(
        json.dumps({"name": "My Embedder", "type": "embedding", "context_length": 512})
    )


async def test_metadata_reaches_every_card(make_client, smol_dir: Path) -> None:
    _sidecar(smol_dir)
    _hub_model(smol_dir)
    client = await make_client(load=False)

    cards = {c["id"]: c for c in (await (await client.get("/v1/models")).json())["data"]}
    mine, hub = cards[MODEL_ID], cards["speechy"]
    assert (mine["name"], mine["type"], mine["contextLength"]) == ("My Embedder", "embedding", 512)
    assert (hub["name"], hub["description"], hub["type"]) == ("Speechy", "Hears", "speech")
    assert hub["contextLength"] == 448

    one = await (await client.get("/v1/models/smollm2")).json()
    assert (one["name"], one["type"], one["contextLength"]) == ("My Embedder", "embedding", 512)

    tabby = {c["id"]: c for c in (await (await client.get("/v1/model/list")).json())["data"]}
    assert tabby[MODEL_ID]["name"] == "My Embedder" and tabby["speechy"]["type"] == "speech"


async def test_type_filter_and_embedding_list_follow_the_metadata(
    make_client, smol_dir: Path
) -> None:
    _sidecar(smol_dir)
    _hub_model(smol_dir)
    client = await make_client(load=False)

    async def ids(path: str) -> list[str]:
        return [c["id"] for c in (await (await client.get(path)).json())["data"]]

    assert await ids("/v1/models?type=embedding") == [MODEL_ID]
    assert await ids("/v1/models?type=speech") == ["speechy"]
    assert await ids("/v1/models?type=chat") == []
    assert await ids("/v1/model/embedding/list") == [MODEL_ID]
