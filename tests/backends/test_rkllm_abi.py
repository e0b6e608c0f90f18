"""The ctypes binding against rkllm.h's layouts, the C compiler's view, and versions."""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

import pytest
from rkllmd.backends.rkllm import abi as c
from rkllmd.backends.rkllm import layout
from rkllmd.backends.rkllm.initlog import capture_native_output, error_lines, parse_facts
from rkllmd.backends.rkllm.library import (
    SUPPORTED,
    abi_for_version,
    open_runtime,
    version_in_file,
)
from rkllmd.errors import BackendUnavailable, LoadFailed

from tests.fixtures.build_double import double_library

# --- sizes and offsets -------------------------------------------------------------------

# Offsets from the headers of each release (aarch64, armhf), as in the ABI notes.
OFFSETS = {
    ("1.3", "RKLLMParam"): {
        "max_context_len": (8, 4),
        "n_keep": (20, 16),
        "top_p": (24, 20),
        "mirostat": (44, 40),
        "skip_special_token": (56, 52),
        "ignore_eos_token": (57, 53),
        "is_async": (58, 54),
        "extend_param": (60, 56),
    },
    ("1.2", "RKLLMParam"): {
        "skip_special_token": (56, 52),
        "is_async": (57, 53),
        "img_start": (64, 56),
        "img_end": (72, 60),
        "img_content": (80, 64),
        "extend_param": (88, 68),
    },
    ("1.3", "RKLLMInput"): {"enable_thinking": (8, 4), "input_type": (12, 8), "u": (16, 12)},
    ("1.2", "RKLLMInput"): {"enable_thinking": (8, 4), "input_type": (12, 8), "u": (16, 12)},
    ("1.3", "RKLLMInferParam"): {
        "lora_params": (8, 4),
        "prompt_cache_params": (16, 8),
        "sampling_params": (24, 12),
        "keep_history": (32, 16),
        "max_new_tokens": (36, 20),
    },
    ("1.2", "RKLLMInferParam"): {"prompt_cache_params": (16, 8), "keep_history": (24, 12)},
    ("1.3", "RKLLMResult"): {
        "token_id": (8, 4),
        "last_hidden_layer": (16, 8),
        "logits": (32, 20),
        "perf": (48, 32),
    },
    ("1.3", "RKLLMExtendParam"): {
        "embed_flash": (4, 4),
        "enabled_cpus_num": (5, 5),
        "enabled_cpus_mask": (8, 8),
        "n_batch": (12, 12),
        "use_cross_attn": (13, 13),
        "reserved": (14, 14),
    },
}


@pytest.mark.parametrize("name", ["1.3", "1.2"])
@pytest.mark.parametrize(("width", "column"), [(8, 0), (4, 1)])
def test_computed_sizes_match_the_headers(name: str, width: int, column: int) -> None:
    abi = c.ABIS[name]
    for struct, sizes in layout.EXPECTED[name].items():
        assert layout.computed_layout(abi.structs()[struct], width)[0] == sizes[column], struct


@pytest.mark.parametrize(("name", "struct"), sorted(OFFSETS))
@pytest.mark.parametrize(("width", "column"), [(8, 0), (4, 1)])
def test_field_offsets_match_the_headers(name: str, struct: str, width: int, column: int) -> None:
    offsets = layout.computed_layout(c.ABIS[name].structs()[struct], width)[2]
    for field, expected in OFFSETS[(name, struct)].items():
        assert offsets[field] == expected[column], field


def test_multimodal_and_callback_layouts() -> None:
    assert layout.computed_layout(c.MultiModalInput13, 8)[0] == 144
    assert layout.computed_layout(c.MultiModalInput13, 4)[0] == 72
    assert layout.computed_layout(c.MultiModalInput12, 8)[0] == 48
    assert layout.computed_layout(c.MultiModalInput12, 4)[0] == 24
    assert layout.computed_layout(c.SamplingParam, 8)[2]["mirostat_eta"] == 32


@pytest.mark.parametrize("name", ["1.3", "1.2"])
def test_ctypes_on_this_host_matches_the_computed_layout(name: str) -> None:
    abi = c.ABIS[name]
    width = ctypes.sizeof(ctypes.c_void_p)
    for struct, kind in abi.structs().items():
        size, _, offsets = layout.computed_layout(kind, width)
        assert ctypes.sizeof(kind) == size, struct
        for field, offset in offsets.items():
            assert getattr(kind, field).offset == offset, (struct, field)
    assert layout.check_sizes(abi) == {s: ctypes.sizeof(k) for s, k in abi.structs().items()}


@pytest.mark.parametrize(("abi_num", "name"), [(13, "1.3"), (12, "1.2")])
def test_the_c_compiler_agrees_with_ctypes(abi_num: int, name: str) -> None:
    lib = ctypes.CDLL(str(double_library(abi_num, "1.3.0" if abi_num == 13 else "1.2.3")))
    lib.rkllm_double_sizeof.argtypes = [ctypes.c_char_p]
    lib.rkllm_double_offsetof.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    abi = c.ABIS[name]
    for struct, kind in abi.structs().items():
        assert lib.rkllm_double_sizeof(struct.encode()) == ctypes.sizeof(kind), struct
    checked = 0
    for (abi_name, struct), fields in OFFSETS.items():
        if abi_name != name:
            continue
        for field in fields:
            c_field = "prompt_input" if field == "u" else field
            got = lib.rkllm_double_offsetof(struct.encode(), c_field.encode())
            if got >= 0:
                assert got == getattr(abi.structs()[struct], field).offset, (struct, field)
                checked += 1
    assert checked >= 10


@pytest.mark.parametrize(("machine", "column"), [("aarch64", 0), ("armv7l", 1)])
def test_board_hosts_use_the_header_table(
    monkeypatch: pytest.MonkeyPatch, machine: str, column: int
) -> None:
    monkeypatch.setattr(layout.platform, "machine", lambda: machine)
    for name in ("1.3", "1.2"):
        expected = layout.expected_sizes(c.ABIS[name])
        assert expected == {k: v[column] for k, v in layout.EXPECTED[name].items()}


def test_a_wrong_binding_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(layout.platform, "machine", lambda: "aarch64")
    wrong = c.Abi("1.3", c.Param12, c.Input13, c.InferParam12, per_run_sampling=True)
    with pytest.raises(LoadFailed) as err:
        layout.check_sizes(wrong)
    assert "RKLLMParam is 208 bytes, expected 184" in err.value.message
    assert "RKLLMInferParam is 32 bytes, expected 40" in err.value.message


# --- versions -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "abi"),
    [
        ("1.3.0", "1.3"),
        ("1.3.1", "1.3"),
        ("v1.3.0", "1.3"),
        ("1.2.1", "1.2"),
        ("1.2.2", "1.2"),
        ("1.2.3", "1.2"),
    ],
)
def test_supported_versions(version: str, abi: str) -> None:
    assert abi_for_version(version).name == abi


@pytest.mark.parametrize(
    "version", ["1.2.0", "1.1.4", "1.0.1", "1.2.1b1", "1.2.4", "1.4.0", "2.0.0", "banana"]
)
def test_refused_versions_name_both_sides(version: str) -> None:
    with pytest.raises(LoadFailed) as err:
        abi_for_version(version)
    assert version in err.value.message and SUPPORTED in err.value.message


def test_version_is_read_from_the_library_file() -> None:
    assert version_in_file(str(double_library(13, "1.3.0"))) == "1.3.0"
    assert version_in_file(str(double_library(12, "1.2.3"))) == "1.2.3"
    assert version_in_file(str(double_library(13, "1.3.0", banner=False))) is None
    assert version_in_file("/nonexistent/librkllmrt.so") is None


def test_open_runtime_picks_the_abi() -> None:
    runtime = open_runtime(str(double_library(12, "1.2.2")), None)
    assert (runtime.version, runtime.version_source) == ("1.2.2", "library")
    assert runtime.abi.name == "1.2"
    forced = open_runtime(str(double_library(13, "1.3.0", banner=False)), "1.3.0")
    assert (forced.version_source, forced.abi.name) == ("config", "1.3")


def test_open_runtime_refuses_without_a_version() -> None:
    with pytest.raises(LoadFailed) as err:
        open_runtime(str(double_library(13, "1.3.0", banner=False)), None)
    assert "rkllm.version" in err.value.message and "1.2.1+ and 1.3" in err.value.message


def test_missing_configured_library(tmp_path: Path) -> None:
    with pytest.raises(BackendUnavailable) as err:
        open_runtime(str(tmp_path / "librkllmrt.so"), None)
    assert str(tmp_path) not in err.value.message


def test_not_a_library(tmp_path: Path) -> None:
    fake = tmp_path / "librkllmrt.so"
    fake.write_bytes(b"rkllm-runtime version: 1.3.0\0garbage")
    with pytest.raises(BackendUnavailable) as err:
        open_runtime(str(fake), None)
    assert str(tmp_path) not in err.value.message


# --- the runtime's init log -------------------------------------------------------------------


INIT_LOG = [
    "I rkllm: rkllm-runtime version: 1.2.1, rknpu driver version: 0.9.8, platform: RK3588",
    "I rkllm: rkllm-toolkit version: 1.2.1b1, max_context_limit: 4096, npu_core_num: 3, "
    "target_platform: RK3588, model_dtype: W8A8_G128",
    "I rkllm: Enabled cpus: [4, 5, 6, 7]",
]


def test_facts_from_the_init_log() -> None:
    assert parse_facts(INIT_LOG) == {
        "runtime_version": "1.2.1",
        "driver_version": "0.9.8",
        "platform": "RK3588",
        "toolkit_version": "1.2.1b1",
        "max_context_limit": 4096,
        "npu_core_num": 3,
        "target_platform": "RK3588",
        "model_dtype": "W8A8_G128",
    }


def test_context_limit_from_the_error_line() -> None:
    line = "E rkllm: max_context[8192] must be less than the model's max_context_limit[2048]"
    assert parse_facts([line])["max_context_limit"] == 2048


def test_error_lines_lose_their_paths() -> None:
    lines = ["I rkllm: fine", "E rkllm: failed to open /home/me/models/x.rkllm: denied"]
    assert error_lines(lines) == ["failed to open <path>: denied"]


def test_native_stdio_is_captured_and_passed_on(capfd: pytest.CaptureFixture[str]) -> None:
    libc = ctypes.CDLL(None)
    with capture_native_output() as lines:
        libc.printf(b"I rkllm: from C stdout (buffered)\n")
        os.write(2, b"E rkllm: from fd 2\n")
    assert sorted(lines) == ["E rkllm: from fd 2", "I rkllm: from C stdout (buffered)"]
    assert "from C stdout" in capfd.readouterr().err
