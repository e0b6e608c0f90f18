"""A large models dir: a "not found" error names a bounded number of ids."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from rkllmd.catalog.entries import IDS_IN_DETAILS
from rkllmd.catalog.registry import ModelRegistry
from rkllmd.errors import ModelNotFound


async def test_not_found_details_cap_the_id_list(tmp_path: Path) -> None:
    past = time.time() - 3600
    for i in range(1000):
        path = tmp_path / f"model-{i:04d}.gguf"
        path.write_bytes(b"GGUF\x03\x00\x00\x00")
        os.utime(path, (past, past))
    registry = ModelRegistry(tmp_path)
    await registry.scan()
    with pytest.raises(ModelNotFound) as err:
        registry.resolve("no-such-model")
    details = err.value.to_data()
    assert details["available_count"] == 1000
    assert details["available"] == [f"model-{i:04d}" for i in range(IDS_IN_DETAILS)]
    assert "(980 more)" in err.value.message
    assert len(json.dumps(details)) < 4000  # was every id: 1.1 MB with 100,000 models
