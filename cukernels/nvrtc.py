"""Compile the kernel sources with NVRTC, as cupy.RawModule does, on a machine without a GPU.

NVRTC (``libnvrtc.so``, from the CUDA toolkit or the ``nvidia-cuda-nvrtc`` wheel of the ``[sass]``
extra) is called through ctypes with the launchers' options (``launch.rawmodule_options``) and
name expressions, so that a source that nvcc accepts but NVRTC does not (a missing include path,
a host-only construct, a template instantiation name) fails here, in CI, instead of on the GPU
machine. Only compilation to PTX is checked: nothing is loaded.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from pathlib import Path


def _candidates() -> list[str]:
    out = []
    try:
        import nvidia

        for root in getattr(nvidia, "__path__", []):
            for sub in ("cu13", "cuda_nvrtc", "cu12"):
                out.extend(str(p) for p in sorted((Path(root) / sub / "lib").glob("libnvrtc.so*")))
    except ImportError:
        pass
    for root in ("/usr/local/cuda", "/usr/local/cuda-13.0"):
        out.extend(str(p) for p in sorted(Path(root, "lib64").glob("libnvrtc.so*")))
    found = ctypes.util.find_library("nvrtc")
    if found:
        out.append(found)
    return out


def library():
    """The loaded libnvrtc, or None when there is none on this machine."""
    for path in _candidates():
        try:
            return ctypes.CDLL(path)
        except OSError:
            continue
    return None


def compile_source(source: str, options, name_expressions=(), *, lib=None) -> tuple[bool, str, dict]:
    """(ok, log, {name expression: lowered name}) of NVRTC on ``source`` with ``options``."""
    lib = lib or library()
    if lib is None:
        raise FileNotFoundError("libnvrtc not found (pip install 'refsim[sass]' or a CUDA toolkit)")
    prog = ctypes.c_void_p()
    _check(lib, lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), b"kernel.cu", 0, None, None))
    try:
        for expr in name_expressions:
            _check(lib, lib.nvrtcAddNameExpression(prog, expr.encode()))
        opts = [o.encode() for o in options]
        arr = (ctypes.c_char_p * len(opts))(*opts)
        rc = lib.nvrtcCompileProgram(prog, len(opts), arr)
        size = ctypes.c_size_t()
        _check(lib, lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size)))
        buf = ctypes.create_string_buffer(size.value)
        _check(lib, lib.nvrtcGetProgramLog(prog, buf))
        log = buf.value.decode(errors="replace")
        lowered = {}
        if rc == 0:
            for expr in name_expressions:
                name = ctypes.c_char_p()
                _check(lib, lib.nvrtcGetLoweredName(prog, expr.encode(), ctypes.byref(name)))
                lowered[expr] = name.value.decode()
        return rc == 0, log, lowered
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(prog))


def _check(lib, rc):
    if rc:
        lib.nvrtcGetErrorString.restype = ctypes.c_char_p
        raise RuntimeError(f"NVRTC call failed: {lib.nvrtcGetErrorString(rc).decode()}")
