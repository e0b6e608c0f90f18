"""Import every compiled module of the bundled virtualenv (run by the venv's python).

Proves that the packaging steps (strip, file removal) broke no extension module and
that llama.cpp's libraries load. Prints the count; exits 1 listing the failures.
"""

import importlib
import pathlib
import sys

site = next(pathlib.Path(sys.prefix, "lib").glob("python3*/site-packages"))
failed, count = [], 0
for path in sorted(site.rglob("*.so")):
    rel = path.relative_to(site)
    if rel.parts[0].endswith(".libs") or rel.parts[:2] == ("llama_cpp", "lib"):
        continue  # plain shared libraries, loaded by the modules below
    name = ".".join((*rel.parts[:-1], rel.name.split(".")[0]))
    try:
        importlib.import_module(name)
        count += 1
    except Exception as exc:
        failed.append(f"{name}: {exc}")
try:
    import llama_cpp

    count += 1
    print(f"llama_cpp {llama_cpp.__version__}", end="; ")
except Exception as exc:
    failed.append(f"llama_cpp: {exc}")
print(f"{count} modules imported")
if failed:
    print("\n".join(failed))
    sys.exit(1)
