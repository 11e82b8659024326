"""Compile every CUDA source with nvcc (the no-GPU check of CI) and find cupy when there is one."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

KERNEL_DIR = Path(__file__).resolve().parent
ARCHS = ("sm_80", "sm_90")
NVCC_FLAGS = ("-cubin", "-O1", "--fmad=false", "-std=c++17")


def sources() -> list[Path]:
    """Every ``.cu`` file of the package (headers are compiled through them)."""
    return sorted(KERNEL_DIR.glob("*.cu"))


def nvcc_path() -> str | None:
    return shutil.which("nvcc")


def nvcc_compile(source, arch, out_dir, extra=()) -> subprocess.CompletedProcess:
    """nvcc -cubin for one arch (device code only, through ptxas), ``extra`` flags appended; returns the
    finished process."""
    src = Path(source)
    if arch not in ARCHS:
        raise ValueError(f"arch={arch!r} is not allowed; allowed: {', '.join(ARCHS)}")
    nvcc = nvcc_path()
    if nvcc is None:
        raise FileNotFoundError("nvcc is not on PATH")
    out = Path(out_dir) / f"{src.stem}.{arch}.cubin"
    cmd = [nvcc, *NVCC_FLAGS, f"-arch={arch}", f"-I{KERNEL_DIR}", *extra, "-o", str(out), str(src)]
    return subprocess.run(cmd, capture_output=True, text=True)


def _cupy_cuda_path() -> str | None:
    try:
        import cupy
    except Exception:
        return None
    try:
        return cupy.cuda.get_cuda_path()
    except Exception:
        return None


def _nvidia_wheel_includes() -> list[Path]:
    """Include folders of the nvidia-* wheels (cupy-cuda13x takes its headers from them)."""
    try:
        import nvidia
    except Exception:
        return []
    out = []
    for root in getattr(nvidia, "__path__", []):
        for sub in ("cu13", "cuda_runtime", "cuda_nvrtc", "cu12"):
            out.append(Path(root) / sub / "include")
    return out


def _cupy_bundled_includes() -> list[Path]:
    """cupy's own copies of the CUDA fp16 headers (for machines with no toolkit), newest CUDA first."""
    try:
        import importlib.util

        spec = importlib.util.find_spec("cupy")
    except (ImportError, ValueError):
        return []
    if spec is None or not spec.origin:
        return []
    root = Path(spec.origin).parent / "_core" / "include" / "cupy" / "_cuda"
    return sorted(root.glob("cuda-*"), reverse=True)


def cuda_include_dirs(*, env=None, nvcc=None, cupy_path=None, wheel_dirs=None) -> list[str]:
    """Folders that hold ``cuda_fp16.h``, best first: cupy's CUDA path, ``CUDA_PATH`` / ``CUDA_HOME``,
    the folder above the real ``nvcc`` (symlinks and wrapper scripts resolved by looking beside
    ``bin``), ``/usr/local/cuda``, the nvidia-* wheels, then cupy's bundled fp16 headers. NVRTC does
    not always search them itself (issue 15: a bare NVRTC fails on ``#include <cuda_fp16.h>``), so the
    launchers pass each as ``-I``.
    The keyword arguments replace what is looked up, for the tests.
    """
    env = os.environ if env is None else env
    roots: list[Path] = []
    cp_path = _cupy_cuda_path() if cupy_path is None else cupy_path
    if cp_path:
        roots.append(Path(cp_path))
    for var in ("CUDA_PATH", "CUDA_HOME", "CUDA_ROOT"):
        if env.get(var):
            roots.append(Path(env[var]))
    nv = nvcc_path() if nvcc is None else nvcc
    if nv:
        roots.append(Path(nv).resolve().parent.parent)
        roots.extend(_script_targets(Path(nv)))
    roots.append(Path("/usr/local/cuda"))
    cands = []
    for r in roots:
        cands.append(r / "include")
        cands.extend(sorted((r / "targets").glob("*/include")))
    cands.extend(_nvidia_wheel_includes() if wheel_dirs is None else [Path(d) for d in wheel_dirs])
    if wheel_dirs is None:
        cands.extend(_cupy_bundled_includes())
    out: list[str] = []
    for c in cands:
        if (c / "cuda_fp16.h").is_file() and str(c.resolve()) not in out:
            out.append(str(c.resolve()))
    return out


def _script_targets(nvcc: Path) -> list[Path]:
    """CUDA roots named inside a small wrapper script (``exec /usr/local/cuda-13.0/bin/nvcc "$@"``)."""
    try:
        if nvcc.stat().st_size > 4096:
            return []
        text = nvcc.read_text(errors="ignore")
    except OSError:
        return []
    return [Path(w).parent.parent for w in text.split() if w.startswith("/") and w.endswith("/bin/nvcc")]


def gpu_available() -> bool:
    """True when cupy imports and sees at least one CUDA device."""
    try:
        import cupy
    except Exception:
        return False
    try:
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False
