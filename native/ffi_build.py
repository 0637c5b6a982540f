"""cffi build script (API mode, out-of-line) for walq's native core.

setup.py names this file in ``cffi_modules``; ``pip install .`` runs it and
produces the extension ``walq._native``.  The declarations come from
``walq_api.h``, the same header the C source includes, so the two cannot drift.
"""

from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent

ffibuilder = FFI()
ffibuilder.cdef((HERE / "walq_api.h").read_text())
ffibuilder.set_source(
    "walq._native",
    '#include "walq.c"\n#include "queue_records.c"\n#include "qindex.c"',
    include_dirs=[str(HERE)],
    extra_compile_args=["-O2", "-std=gnu11", "-Wall", "-Wno-unused-function"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
