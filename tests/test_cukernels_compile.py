"""Every CUDA source compiles with nvcc for sm_80 and sm_90 (no GPU needed; skipped only without nvcc)."""

from concurrent.futures import ThreadPoolExecutor

import pytest

from cukernels.compile import ARCHS, nvcc_compile, nvcc_path, sources

pytestmark = pytest.mark.skipif(nvcc_path() is None, reason="nvcc is not on PATH on this machine")


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """Compile each (source, arch) once, two at a time (CI has 2 cores)."""
    out = tmp_path_factory.mktemp("cubin")
    jobs = [(src, arch) for src in sources() for arch in ARCHS]
    with ThreadPoolExecutor(max_workers=2) as pool:
        procs = list(pool.map(lambda job: nvcc_compile(job[0], job[1], out), jobs))
    return {(src.name, arch): proc for (src, arch), proc in zip(jobs, procs, strict=True)}


def test_every_kernel_source_is_found():
    names = {s.name for s in sources()}
    assert {"lowbit_gemm.cu", "ln_quant.cu", "sdr.cu", "wxa16.cu"} <= names


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("name", [s.name for s in sources()])
def test_source_compiles(compiled, name, arch):
    proc = compiled[(name, arch)]
    assert proc.returncode == 0, f"nvcc failed for {name} {arch}:\n{proc.stderr}"


def test_a_broken_source_fails_the_check(tmp_path):
    bad = tmp_path / "broken.cu"
    bad.write_text('#include "common.cuh"\nextern "C" __global__ void k(int *p) { p[0] = undefined_name; }\n')
    proc = nvcc_compile(bad, "sm_90", tmp_path)
    assert proc.returncode != 0 and "undefined_name" in proc.stderr
