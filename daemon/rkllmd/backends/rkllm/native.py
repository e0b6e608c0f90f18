"""One RKLLM handle: init/destroy, one run at a time, abort from any thread.

The result callback is a ctypes function object owned by this handle for its
whole life (the runtime keeps the pointer). It copies what it needs out of the
``RKLLMResult`` before returning (the runtime frees it afterwards), hands it to
the sink of the current run, and always returns 0 explicitly (a 1 would pause
the run). The return of ``rkllm_run`` is what ends a run, not FINISH.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from array import array
from typing import Any, Protocol

from . import abi as c
from .initlog import capture_native_output
from .library import Runtime

logger = logging.getLogger(__name__)


class RunSink(Protocol):
    def token(self, text: bytes, waiting: bool) -> None: ...
    def hidden(self, values: array[float], dim: int, tokens: int) -> None: ...
    def finish(self, perf: dict[str, float]) -> None: ...
    def error(self) -> None: ...


def perf_dict(perf: Any) -> dict[str, float]:
    return {
        "prefill_time_ms": round(float(perf.prefill_time_ms), 3),
        "prefill_tokens": int(perf.prefill_tokens),
        "generate_time_ms": round(float(perf.generate_time_ms), 3),
        "generate_tokens": int(perf.generate_tokens),
        "memory_usage_mb": round(float(perf.memory_usage_mb), 3),
    }


class NativeModel:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.lib: Any = runtime.lib
        self.abi = runtime.abi
        self._handle = ctypes.c_void_p()
        self._callback = c.ResultCallback(self._on_result)
        self._callbacks: Any = None
        self._sink: RunSink | None = None
        self._run_lock = threading.Lock()
        self._lora: Any = None
        self.init_log: list[str] = []

    # --- lifecycle -------------------------------------------------------------------

    def default_param(self) -> Any:
        return self.lib.rkllm_createDefaultParam()

    def init(self, param: Any) -> int:
        """rkllm_init with the runtime's own log captured into ``init_log``."""
        if self.abi.name == "1.3":
            self._callbacks = c.Callbacks13(result_callback=self._callback)
            third: Any = ctypes.byref(self._callbacks)
        else:
            third = self._callback
        with capture_native_output() as lines:
            rc = int(self.lib.rkllm_init(ctypes.byref(self._handle), ctypes.byref(param), third))
        self.init_log = list(lines)
        if rc != 0:
            self._handle = ctypes.c_void_p()
        return rc

    @property
    def ready(self) -> bool:
        return bool(self._handle.value)

    def destroy(self) -> None:
        if self.ready:
            self.lib.rkllm_destroy(self._handle)
            self._handle = ctypes.c_void_p()

    # --- calls -------------------------------------------------------------------------

    def set_chat_template(self, system: str, prefix: str, postfix: str) -> int:
        return int(
            self.lib.rkllm_set_chat_template(
                self._handle, system.encode(), prefix.encode(), postfix.encode()
            )
        )

    def load_lora(self, path: bytes, name: str, scale: float) -> int:
        """rkllm_load_lora: the adapter is then chosen per run by its name."""
        adapter = c.LoraAdapter(path, name.encode(), scale)
        self._lora = adapter  # the runtime may keep the strings' pointers
        return int(self.lib.rkllm_load_lora(self._handle, ctypes.byref(adapter)))

    def clear_kv_cache(self) -> int:
        return int(self.lib.rkllm_clear_kv_cache(self._handle, 0, None, None))

    def kv_cache_size(self) -> int | None:
        sizes = (ctypes.c_int * 8)()  # n_batch is always 1 here; room to spare
        if self.lib.rkllm_get_kv_cache_size(self._handle, sizes) != 0:
            return None
        return int(sizes[0])

    def abort(self) -> None:
        if self.ready:
            self.lib.rkllm_abort(self._handle)

    def is_running(self) -> bool:
        return self.ready and bool(self.lib.rkllm_is_running(self._handle))

    def run(self, rk_input: Any, infer: Any, sink: RunSink) -> int:
        """Blocking ``rkllm_run``; callbacks go to ``sink`` until it returns."""
        with self._run_lock:
            self._sink = sink
            try:
                return int(
                    self.lib.rkllm_run(
                        self._handle, ctypes.byref(rk_input), ctypes.byref(infer), None
                    )
                )
            finally:
                self._sink = None

    # --- the callback ----------------------------------------------------------------

    def _on_result(self, result: Any, userdata: Any, state: int) -> int:
        sink = self._sink
        if sink is None or not result:
            return 0
        try:
            self._dispatch(sink, result.contents, state)
        except Exception:  # never let an exception unwind into C
            logger.exception("error in the RKLLM result callback")
        return 0

    @staticmethod
    def _dispatch(sink: RunSink, res: Any, state: int) -> None:
        if state in (c.RUN_NORMAL, c.RUN_WAITING):
            hidden = res.last_hidden_layer
            if hidden.hidden_states and hidden.embd_size > 0 and hidden.num_tokens > 0:
                count = hidden.embd_size * hidden.num_tokens
                values = array("f", ctypes.string_at(hidden.hidden_states, count * 4))
                sink.hidden(values, int(hidden.embd_size), int(hidden.num_tokens))
            if res.text is not None:
                sink.token(bytes(res.text), state == c.RUN_WAITING)
        elif state == c.RUN_FINISH:
            sink.finish(perf_dict(res.perf))
        elif state == c.RUN_ERROR:
            sink.error()
