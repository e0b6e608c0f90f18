"""Schemathesis against the daemon's own /openapi.json: all checks, every phase.

A real daemon serves the RKLLM C double (zero delay) and pulls from a local Hub
stand-in, so every route, downloads included, answers for real. The run is
bounded (``MAX_EXAMPLES`` per operation, fixed seed, deterministic generation)
and must end with zero failures: no 5xx, every response matching the documented
schema, invalid data rejected with 4xx and valid data accepted.

One refinement of a built-in check: a schema-valid chat whose prompt does not
fit the loaded model's context is rightly refused (400 ``context_length_exceeded``,
as OpenAI does), and so is a load asking for more context than the model file
supports (400 ``load_failed`` with ``details.limit``), a template or sampler preset
name that is not in its folder (400 ``unknown_template``, ``unknown_preset``), an
``.rkllm`` model named as the separate embedding model (400
``unsupported_model_format``), given a draft model it cannot use (400
``draft_incompatible``) or asked to tokenize without its tokenizer.json (400
``tokenizer_unavailable``), and a chat when a fuzzed unload left no model loaded
(400 ``no_model_loaded``, the documented contract), and choices or log-probabilities
the loaded backend cannot give (400 ``invalid_params`` with ``param`` ``n`` or
``logprobs``: the NPU runs one generation and reports none). All depend on the model
and on state (what the fuzzer loaded or unloaded last), which a JSON schema cannot
express.
``positive_data_acceptance`` is replaced by
the same check with that allowance. This module is also the schemathesis hooks
module of the run (``SCHEMATHESIS_HOOKS``), which is how the CLI learns about it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.helpers import REPO, DaemonProcess, running_daemon, short_tempdir

MAX_EXAMPLES = int(os.environ.get("RKLLMD_FUZZ_EXAMPLES", "50"))
SEED = int(os.environ.get("RKLLMD_FUZZ_SEED", "20261122"))
PHASES = "examples,coverage,fuzzing,stateful"
MODEL_ID = "Qwen2.5-0.5B-Instruct_W8A8_RK3588"


def _refused_by_state(response: Any) -> bool:
    """400 for a prompt longer than the loaded context, a context above the model's, or
    no model loaded (a fuzzed /v1/models/unload came first; 400 is the documented answer,
    which openai-python surfaces as BadRequestError); the refusals of STATE_CODES and
    CROSS_FIELD below."""
    try:
        body = json.loads(response.content)
    except (ValueError, TypeError, AttributeError):
        return False
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(body, dict) and "detail" in body:
        error = body  # the simple chat dialect: {"detail", "code", ...details}
    if isinstance(error, str):  # Ollama's shape (/api/...): the code rides beside it
        error = {"message": error, "code": body.get("code")}
    if response.status_code not in (400, 422) or not isinstance(error, dict):
        return False
    details = error.get("details", error)
    limit = isinstance(details, dict) and "limit" in details
    return (
        error.get("code") in STATE_CODES
        or (error.get("code") == "load_failed" and limit)
        or (error.get("code") == "invalid_params" and error.get("param") in CROSS_FIELD)
        # logit_bias keys must be token ids: the generator does not honour the schema's
        # propertyNames pattern and sends any key.
        or str(error.get("param") or "").startswith("logit_bias.")
    )


# Refusals that depend on the model, not on the request's schema: what the double's
# replies are (structured replies it cannot give), what the model can do (dimensions,
# fill-in-the-middle, token ids, vision), what an image's bytes hold, what a schema
# given as data uses.
# unknown_template/preset: the names are the files of a folder, not a schema enum;
# unsupported_model_format, tokenizer_unavailable: the model's files decide (an .rkllm
# embedding model; an .rkllm model without tokenizer.json); draft_incompatible: a draft
# model for the NPU model, or one that is not a GGUF (TabbyAPI's draft_model).
STATE_CODES = (
    "context_length_exceeded",
    "no_model_loaded",
    "unknown_template",
    "unknown_preset",
    "unsupported_model_format",
    "tokenizer_unavailable",
    "structured_output_failed",
    "unsupported_by_model",
    "model_has_no_vision",
    "invalid_image",
    "unsupported_schema",
    "draft_incompatible",
)
# Fields whose validity depends on another field (tool_choice naming a tool needs
# tools; echo and suffix need a text prompt): a dependency an OpenAPI schema does not
# state; schema-valid data with it alone is rightly refused, as OpenAI does. n and
# logprobs: what the loaded backend can give (the NPU: one choice, none).
CROSS_FIELD = ("tool_choice", "echo", "suffix", "n", "logprobs")


@schemathesis.check
def positive_data_acceptance_within_context(ctx: Any, response: Any, case: Any) -> bool | None:
    """positive_data_acceptance, allowing a prompt longer than the loaded context."""
    try:
        return positive_data_acceptance(ctx, response, case)
    except AssertionError:
        if _refused_by_state(response):
            return None
        raise


@pytest.fixture
def fuzz_daemon() -> Iterator[DaemonProcess]:
    from tests.fixtures.build_double import double_library, write_model
    from tests.store.hubstub import HubStub

    hub = HubStub().start()
    hub.add_repo("rkllmd-test/tiny", {"model.gguf": b"GGUF" + bytes(60), "README.md": b"hi"})
    root = short_tempdir()
    models = root / "models"
    models.mkdir()
    write_model(models)
    env = {
        "RKLLMD_RKLLM__LIBRARY": str(double_library()),
        "RKLLMD_HUB__ENDPOINT": hub.url,
        "RKLLMD_HUB__MIN_FREE_BYTES": "0",
        "RKLLMD_GENERATION__DEFAULT_MAX_TOKENS": "8",
    }
    try:
        with running_daemon(models, env=env, args=["--load", MODEL_ID]) as daemon:
            yield daemon
    finally:
        hub.stop()
        shutil.rmtree(root, ignore_errors=True)


def _around(log: str, needle: str) -> str:
    lines = log.splitlines()
    hits = [i for i, line in enumerate(lines) if needle in line or "internal error" in line]
    return "\n".join("\n".join(lines[max(0, i - 3) : i + 25]) for i in hits[:3])


def _unexpected_tracebacks(log: str) -> int:
    """Every traceback in the daemon's log is unexpected (malformed requests that aiohttp
    refuses itself are logged as one debug line, without one)."""
    return sum(line.startswith("Traceback") for line in log.splitlines())


def _summary(output: str) -> dict[str, int]:
    figures = {"generated": 0, "failures": 0, "operations": 0}
    if m := re.search(r"(\d+) generated", output):
        figures["generated"] = int(m.group(1))
    if m := re.search(r"found (\d+) unique failures", output):
        figures["failures"] = int(m.group(1))
    if m := re.search(r"Tested: (\d+)", output):
        figures["operations"] = int(m.group(1))
    return figures


# These delete model files: run last, so that every other route meets the model.
DESTRUCTIVE = ("DELETE /v1/models/{model_id}", "POST /v1/models/clean", "DELETE /api/delete")


# An endless stream (the console's live state): a request timeout is its normal end.
# tests/http/test_console_static.py reads it.
ENDLESS = ("GET /v1/events",)


def _schemathesis(daemon: DaemonProcess, report: Path, selection: list[str]) -> tuple[int, str]:
    cli = Path(sys.executable).with_name("schemathesis")
    argv = [
        str(cli),
        "run",
        f"{daemon.http_url}/openapi.json",
        *selection,
        "--checks",
        "all",
        "--exclude-checks",
        "positive_data_acceptance",  # replaced by the variant above
        "--phases",
        PHASES,
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        str(SEED),
        "--generation-deterministic",
        "--request-timeout",
        "20",
        "--continue-on-failure",
        "--no-color",
        "--report",
        "junit",
        "--report-dir",
        str(report),
    ]
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": "tests.reliability.test_fuzz_http",
        "PYTHONPATH": str(REPO),
        "COLUMNS": "200",
    }
    run = subprocess.run(
        argv, cwd=report.parent, env=env, capture_output=True, text=True, timeout=240
    )
    return run.returncode, run.stdout + run.stderr


def test_schemathesis_all_checks_all_phases(fuzz_daemon: DaemonProcess) -> None:
    report = fuzz_daemon.dir / "st"
    started = time.monotonic()
    others = [arg for name in (*DESTRUCTIVE, *ENDLESS) for arg in ("--exclude-name", name)]
    code, output = _schemathesis(fuzz_daemon, report, others)
    figures = _summary(output)
    print(json.dumps({"schemathesis": figures, "seconds": round(time.monotonic() - started, 1)}))
    assert code == 0, output[-20000:]
    assert figures["failures"] == 0 and figures["generated"] > 500, output[-5000:]
    assert figures["operations"] >= 25, output[-5000:]  # every route was exercised

    last = [arg for name in DESTRUCTIVE for arg in ("--include-name", name)]
    code, output = _schemathesis(fuzz_daemon, fuzz_daemon.dir / "st-removal", last)
    removal = _summary(output)
    print(json.dumps({"schemathesis_removal": removal}))
    assert code == 0, output[-20000:]
    assert removal["failures"] == 0 and removal["operations"] == len(DESTRUCTIVE), output[-5000:]

    # The daemon is still well and never hit an unexpected exception on the way.
    assert fuzz_daemon.proc.poll() is None
    log = fuzz_daemon.log()
    if os.environ.get("RKLLMD_FUZZ_KEEP_LOG"):
        Path(os.environ["RKLLMD_FUZZ_KEEP_LOG"]).write_text(log)
    assert "internal error" not in log, _around(log, "internal error")
    assert _unexpected_tracebacks(log) == 0, _around(log, "Traceback")
    assert fuzz_daemon.call("status")["state"] in ("ready", "idle", "failed")
