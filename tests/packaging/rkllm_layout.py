"""The RKLLM binding's layouts on the container's CPU, run by the packaged venv's python.

Arguments: the test double built for ABI 1.3 and the one for ABI 1.2, both compiled
for this CPU. For each ABI, the daemon's own load-time check (``layout.check_sizes``:
ctypes against rkllm.h's table for aarch64 and armhf, or the C rules elsewhere) must
pass, and ctypes' size of every structure and offset of every field the double knows
must equal the C compiler's (the double's ``rkllm_double_sizeof``/``offsetof`` hooks).
Prints one line per ABI; exits 1 listing any difference.
"""

import ctypes
import sys

from rkllmd.backends.rkllm import abi as binding
from rkllmd.backends.rkllm import layout

C_FIELD = {"u": "prompt_input"}  # the anonymous union of RKLLMInput
failed: list[str] = []
for name, path in zip(("1.3", "1.2"), sys.argv[1:3], strict=True):
    lib = ctypes.CDLL(path)
    lib.rkllm_double_sizeof.argtypes = [ctypes.c_char_p]
    lib.rkllm_double_offsetof.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    abi = binding.ABIS[name]
    try:
        sizes = layout.check_sizes(abi)
    except Exception as exc:  # LoadFailed: names every structure that differs
        failed.append(f"{name}: {exc}")
        continue
    offsets = 0
    for struct, kind in abi.structs().items():
        c_size = lib.rkllm_double_sizeof(struct.encode())
        if c_size != sizes[struct]:
            failed.append(f"{name} {struct}: ctypes {sizes[struct]} bytes, C {c_size}")
        for field, *_ in kind._fields_:
            c_name = C_FIELD.get(field, field)
            c_offset = lib.rkllm_double_offsetof(struct.encode(), c_name.encode())
            if c_offset < 0:
                continue  # not one of the fields the double's hook reports
            offsets += 1
            if c_offset != getattr(kind, field).offset:
                failed.append(f"{name} {struct}.{field}: ctypes offset differs from C's {c_offset}")
    shown = ", ".join(f"{s} {n}" for s, n in sorted(sizes.items()))
    print(f"RKLLM {name} on {layout.host_abi()}: {offsets} offsets and sizes agree: {shown}")
if failed:
    print("\n".join(failed))
    sys.exit(1)
