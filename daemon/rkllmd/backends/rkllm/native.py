"""One RKLLM handle: init/destroy, one run at a time, abort from any thread.

The result callback is a ctypes function object owned by this handle for its
whole life (the runtime keeps the pointer). The runtime calls it from its decode
loop and computes the next token only once it has returned, so every
microsecond spent in it is taken from the NPU: it copies what the runtime frees
afterwards (the token's bytes, hidden states, perf figures) into one tuple,
appends that to the run's inbox and returns 0 explicitly (a 1 would pause the
run). The inbox is a ``collections.deque``: appending is atomic and wakes
nobody. Waking the consumer from here (a futex call, and on a busy core a switch
to a thread that at once blocks on the GIL the callback holds) cost as much as
the rest of the callback together (docs/benchmarks.md), so the consumer polls.
Decoding, stop strings and the pipe write happen there. The return of
``rkllm_run`` is what ends a run, not FINISH.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from array import array
from collections import deque
from typing import Any, Protocol

from . import abi as c
from .initlog import capture_native_output
from .library import Runtime

logger = logging.getLogger(__name__)

# Inbox items: (RUN_NORMAL | RUN_WAITING, text bytes), (HIDDEN, float32 bytes, dim, tokens),
# (RUN_FINISH, RKLLMPerfStat bytes), (RUN_ERROR, None).
HIDDEN = -1
Item = tuple[Any, ...]
Inbox = deque[Item | None]  # None: the run has returned (added by the caller)


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


def deliver(item: Item, sink: RunSink) -> None:
    """Hand one inbox item to a sink (on the consumer's thread, not the runtime's)."""
    state = item[0]
    if state == c.RUN_NORMAL or state == c.RUN_WAITING:
        sink.token(item[1], state == c.RUN_WAITING)
    elif state == HIDDEN:
        sink.hidden(array("f", item[1]), item[2], item[3])
    elif state == c.RUN_FINISH:
        sink.finish(perf_dict(c.PerfStat.from_buffer_copy(item[1])))
    elif state == c.RUN_ERROR:
        sink.error()


class NativeModel:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.lib: Any = runtime.lib
        self.abi = runtime.abi
        self._handle = ctypes.c_void_p()
        self._callback = c.ResultCallback(self._on_result)
        self._callbacks: Any = None
        self._inbox: Inbox | None = None  # the current run's, None between runs
        self._append: Any = None  # its append, read by the callback
        self._abort_lock = threading.Lock()  # an abort_run and a run's start or end
        self._hidden = False  # the current run asked for hidden states
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

    def abort_run(self, inbox: Inbox) -> bool:
        """Abort the run that fills ``inbox`` if it has not returned yet, and never a
        later run or a destroyed handle: the cancel watcher is not waited for when its
        run ends. True if the runtime had begun the run, so that it sees the abort."""
        with self._abort_lock:
            if self._inbox is not inbox:
                return False
            started = self.is_running()
            self.abort()
            return started

    def is_running(self) -> bool:
        return self.ready and bool(self.lib.rkllm_is_running(self._handle))

    def run(self, rk_input: Any, infer: Any, inbox: Inbox, hidden: bool = False) -> int:
        """Blocking ``rkllm_run``; the callbacks append their items to ``inbox`` until it
        returns."""
        with self._run_lock:
            with self._abort_lock:
                self._inbox, self._append, self._hidden = inbox, inbox.append, hidden
            try:
                return int(
                    self.lib.rkllm_run(
                        self._handle, ctypes.byref(rk_input), ctypes.byref(infer), None
                    )
                )
            finally:
                with self._abort_lock:
                    self._inbox = self._append = None

    # --- the callback (the runtime's thread; keep it to copying) ----------------------

    def _on_result(self, result: Any, userdata: Any, state: int) -> int:
        append = self._append
        if append is None or not result:
            return 0
        try:
            res = result.contents
            if state == c.RUN_NORMAL or state == c.RUN_WAITING:
                if self._hidden:
                    self._copy_hidden(res.last_hidden_layer, append)
                text = res.text
                if text is not None:
                    append((state, text))
            elif state == c.RUN_FINISH:
                append((state, bytes(res.perf)))
            elif state == c.RUN_ERROR:
                append((state, None))
        except Exception:  # never let an exception unwind into C
            logger.exception("error in the RKLLM result callback")
        return 0

    @staticmethod
    def _copy_hidden(hidden: Any, append: Any) -> None:
        dim, tokens = int(hidden.embd_size), int(hidden.num_tokens)
        if hidden.hidden_states and dim > 0 and tokens > 0:
            append((HIDDEN, ctypes.string_at(hidden.hidden_states, dim * tokens * 4), dim, tokens))
