"""Every kernel source compiles under NVRTC with the launchers' options and name expressions (no GPU needed).

cupy.RawModule compiles with NVRTC, not nvcc; this runs the same compiler on the same source, options
(``launch.rawmodule_options``: ours plus ``-I`` the CUDA include folder) and template name expressions,
for sm_80 and sm_90 PTX. Skipped only where no libnvrtc is found (the [sass] / [test] extras carry one).
"""

import pytest

from cukernels import launch, nvrtc
from cukernels.compile import KERNEL_DIR, cuda_include_dirs

LIB = nvrtc.library()
pytestmark = pytest.mark.skipif(LIB is None, reason="libnvrtc not found (pip install 'refsim[sass]')")
MODULES = {"sdr": (), "ln_quant": (), "lowbit_gemm": (), "wxa16": launch.WXA16_NAMES}


@pytest.mark.parametrize("arch", ["compute_80", "compute_90"])
@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_compiles_under_nvrtc(name, arch):
    if not cuda_include_dirs():
        pytest.skip("no CUDA include folder with cuda_fp16.h on this machine")
    src = (KERNEL_DIR / f"{name}.cu").read_text()
    # every wxa16 instantiation for sm_90; two for sm_80 (2 CPU cores: each instantiation costs about a second)
    exprs = MODULES[name] if arch == "compute_90" else MODULES[name][:1] + MODULES[name][-1:]
    ok, log, lowered = nvrtc.compile_source(src, launch.rawmodule_options() + (f"-arch={arch}",), exprs, lib=LIB)
    assert ok, log
    assert set(lowered) == set(exprs) and all(v.startswith("_Z12wxa16_kernel") for v in lowered.values())


def test_without_the_include_path_nvrtc_may_miss_cuda_fp16():
    """The defect the explicit -I fixes: a bare NVRTC either finds the header itself or fails on exactly it."""
    src = (KERNEL_DIR / "sdr.cu").read_text()
    ok, log, _ = nvrtc.compile_source(src, launch.RAWMODULE_OPTIONS + ("-arch=compute_90",), lib=LIB)
    assert ok or "cuda_fp16.h" in log


def test_a_broken_source_fails_under_nvrtc():
    ok, log, _ = nvrtc.compile_source('extern "C" __global__ void k(int *p) { p[0] = undefined_name; }',
                                      ("-arch=compute_90",), lib=LIB)
    assert not ok and "undefined_name" in log
