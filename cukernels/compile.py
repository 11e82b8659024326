"""Compile every CUDA source with nvcc (the no-GPU check of CI) and find cupy when there is one."""

from __future__ import annotations

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


def nvcc_compile(source, arch, out_dir) -> subprocess.CompletedProcess:
    """nvcc -cubin for one arch (device code only, through ptxas); returns the finished process."""
    src = Path(source)
    if arch not in ARCHS:
        raise ValueError(f"arch={arch!r} is not allowed; allowed: {', '.join(ARCHS)}")
    nvcc = nvcc_path()
    if nvcc is None:
        raise FileNotFoundError("nvcc is not on PATH")
    out = Path(out_dir) / f"{src.stem}.{arch}.cubin"
    cmd = [nvcc, *NVCC_FLAGS, f"-arch={arch}", f"-I{KERNEL_DIR}", "-o", str(out), str(src)]
    return subprocess.run(cmd, capture_output=True, text=True)


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
