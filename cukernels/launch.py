"""Thin CuPy launchers: validate with ``cukernels.host``, move arrays to the device, launch.

Each launcher takes the keyword arguments of its harness target (``cukernels.harness``), so
``harness.validate(cukernels.launch.lowbit_gemm, "lowbit_gemm", xp="cupy")`` runs it. Inputs
may be numpy arrays, cupy arrays or torch CUDA tensors (taken zero-copy through
``__cuda_array_interface__``), including strided and offset views; output buffers must be
C-contiguous device arrays (or None: the launcher allocates them). Unsupported shapes, dtypes
or layouts raise before launch. cupy is imported here only, lazily: ``import cukernels``
works without it.

Each launcher is ``prepare_<name>(**kw)`` (checks, device copies, compaction, the grid: a
:class:`Prepared`) followed by ``Prepared.launch()`` (the kernel alone, asynchronous) and
``Prepared.finish()`` (the post-launch checks, which synchronize). ``<name>(**kw)`` does all
three; benchmarks/bench_kernels.py times ``launch()`` only.
"""

from __future__ import annotations

import functools

import numpy as np

from cukernels import host
from cukernels.compile import KERNEL_DIR, cuda_include_dirs

RAWMODULE_OPTIONS = ("--fmad=false", "-std=c++17", f"-I{KERNEL_DIR}")


def rawmodule_options(include_dirs=None) -> tuple[str, ...]:
    """NVRTC options: ours, then ``-I`` each CUDA include folder (``compile.cuda_include_dirs``), since
    NVRTC does not always find ``cuda_fp16.h`` on its own."""
    dirs = cuda_include_dirs() if include_dirs is None else include_dirs
    return RAWMODULE_OPTIONS + tuple(f"-I{d}" for d in dirs)


def _cupy():
    try:
        import cupy
    except ImportError as exc:  # pragma: no cover - depends on the machine
        raise RuntimeError("cukernels launchers need cupy and a CUDA device (pip install 'refsim[gpu]')") from exc
    return cupy


@functools.lru_cache(maxsize=None)
def module(name: str, name_expressions: tuple[str, ...] = ()):
    """The cupy.RawModule of ``cukernels/<name>.cu`` (compiled by NVRTC once per process and expressions)."""
    cp = _cupy()
    source = (KERNEL_DIR / f"{name}.cu").read_text()
    if name_expressions:
        return cp.RawModule(code=source, options=rawmodule_options(), name_expressions=name_expressions)
    return cp.RawModule(code=source, options=rawmodule_options())


class Prepared:
    """One kernel launch with everything decided and on the device: ``launch()`` runs the kernel only."""

    def __init__(self, kernel, grid, block, args, outputs, finish=None, shared_mem=0):
        self.kernel, self.grid, self.block, self.args = kernel, grid, block, args
        self.outputs, self._finish, self.shared_mem = outputs, finish, shared_mem

    def launch(self):
        if self.shared_mem:
            self.kernel(self.grid, self.block, self.args, shared_mem=self.shared_mem)
        else:
            self.kernel(self.grid, self.block, self.args)

    def finish(self):
        if self._finish is not None:
            self._finish()
        return self.outputs[0] if len(self.outputs) == 1 else self.outputs

    def __call__(self):
        self.launch()
        return self.finish()


def _device(a, name):
    cp = _cupy()
    if a is None:
        raise ValueError(f"{name} is required")
    return cp.asarray(a)


def _rows(a, name, align):
    """A 2-d device array and its row stride (elements), copied only when the kernel cannot read it as is."""
    cp = _cupy()
    d = _device(a, name)
    copy, ld = host.plan_rows(d.shape, d.strides, d.itemsize, d.data.ptr, align)
    if copy:
        d = cp.ascontiguousarray(d)
        copy, ld = host.plan_rows(d.shape, d.strides, d.itemsize, d.data.ptr, align)
        if copy:
            raise ValueError(f"{name}: rows of {d.shape[1]} x {d.itemsize} bytes cannot be {align}-byte aligned")
    return d, ld


def _vector(a, name):
    return _cupy().ascontiguousarray(_device(a, name))


def _out(buf, shape, dtype, name, store_bytes=1):
    cp = _cupy()
    if buf is None:
        return cp.empty(shape, dtype=dtype)
    if isinstance(buf, np.ndarray):
        raise TypeError(f"{name} must be a device array (cupy or torch CUDA), got a numpy array")
    d = cp.asarray(buf)
    if d.dtype != np.dtype(dtype) or tuple(d.shape) != tuple(shape) or not d.flags.c_contiguous:
        raise ValueError(f"{name} must be a C-contiguous {np.dtype(dtype).name} array of shape {tuple(shape)}, "
                         f"got {d.dtype} {tuple(d.shape)} (contiguous: {d.flags.c_contiguous})")
    host.check_output_alignment(d.data.ptr, store_bytes, name=name)
    return d


class _Shape:
    """Stands in for an output that is not written, for the shape and dtype checks."""

    def __init__(self, shape, dtype):
        self.shape, self.dtype, self.ndim = tuple(shape), np.dtype(dtype), len(shape)


def prepare_lowbit_gemm(*, a_packed, w_packed, a_zero, w_colsum, cluster_offsets, scale_a, scale_w, bias=None,
                        out_isums=None, out_y=None, bits, write_isums=True) -> Prepared:
    cp = _cupy()
    c = len(cluster_offsets) - 1
    m, n = a_packed.shape[0], w_packed.shape[0]
    out_isums = _out(out_isums, (c, m, n), np.int32, "out_isums", 4) if write_isums else None
    out_y = _out(out_y, (m, n), np.float32, "out_y", 4)
    host.check_lowbit_gemm_args(a_packed=a_packed, w_packed=w_packed, a_zero=a_zero, w_colsum=w_colsum,
                                cluster_offsets=cluster_offsets, scale_a=scale_a, scale_w=scale_w, bias=bias,
                                out_isums=out_isums if write_isums else _Shape((c, m, n), np.int32),
                                out_y=out_y, bits=bits)
    a, lda = _rows(a_packed, "a_packed", host.GEMM_ROW_ALIGN[bits])
    w, ldw = _rows(w_packed, "w_packed", host.GEMM_ROW_ALIGN[bits])
    grid, block = host.lowbit_gemm_grid(m, n)
    kern = module("lowbit_gemm").get_function("lowbit_gemm_w4a4" if bits == 4 else "lowbit_gemm_w3a3")
    bias_d = _vector(bias, "bias") if bias is not None else None
    args = (a, np.int64(lda), w, np.int64(ldw), _vector(a_zero, "a_zero"),
            cp.ascontiguousarray(_device(w_colsum, "w_colsum")), _vector(cluster_offsets, "cluster_offsets"),
            np.int32(c), _vector(scale_a, "scale_a"), _vector(scale_w, "scale_w"),
            bias_d if bias_d is not None else np.uint64(0),
            out_isums if out_isums is not None else np.uint64(0), out_y, np.int32(m), np.int32(n))
    return Prepared(kern, grid, block, args, (out_isums, out_y))


def lowbit_gemm(**kw):
    """W4A4 / W3A3 GEMM (lowbit_gemm.cu); returns (isums (C, M, N) int32, y (M, N) float32).

    ``write_isums=False`` skips the per-cluster sums (isums is then None): y only, as in inference.
    """
    return prepare_lowbit_gemm(**kw)()


def prepare_ln_quant(*, x, gamma, beta, eps, src_index, cluster_of, scale, zero, bits, compute_dtype="float16",
                     out_packed=None, out_nonfinite=None) -> Prepared:
    cp = _cupy()
    bits = host.check_bits_choice(bits)
    host.check_dtype(x, ["float32"], name="x")
    if compute_dtype not in host.LN_COMPUTE_DTYPES:
        raise ValueError(f"compute_dtype={compute_dtype!r} is not allowed; allowed: 'float16', 'float32'")
    m, h = x.shape
    for name, arr in (("gamma", gamma), ("beta", beta)):
        host.check_dtype(arr, ["float32"], name=name)
        host.check_shape(arr, (h,), name=name)
    kp = len(src_index)
    if kp % host.TILE_K or len(cluster_of) != kp:
        raise ValueError(f"src_index and cluster_of must have the same length, a multiple of {host.TILE_K} "
                         "(see cukernels.host.ln_quant_plan)")
    src = np.asarray(host._to_host(src_index))
    if src.max() >= h or src.min() < -1:
        raise ValueError(f"src_index must hold channels 0..{h - 1} or -1 (padding)")
    c = len(scale)
    host.check_shape(zero, (c,), name="zero")
    host.check_dtype(scale, ["float32"], name="scale")
    host.check_dtype(zero, ["int32"], name="zero")
    host.check_ln_quant_params(scale, zero, compute_dtype)
    row = host.packed_row_bytes(kp, host.LOWBIT_LAYOUTS[bits])
    out_packed = _out(out_packed, (m, row), np.uint8, "out_packed", 4)  # the kernel stores 32-bit words
    out_nonfinite = _out(out_nonfinite, (m,), np.int32, "out_nonfinite", 4)
    xd, ldx = _rows(x, "x", 4)
    grid, block = host.ln_quant_grid(m)
    kern = module("ln_quant").get_function("ln_quant_int4" if bits == 4 else "ln_quant_int3")
    args = (xd, np.int64(ldx), _vector(gamma, "gamma"), _vector(beta, "beta"), np.float32(eps),
            _vector(src_index, "src_index"), _vector(cluster_of, "cluster_of"), _vector(scale, "scale"),
            _vector(zero, "zero"), np.int32(compute_dtype == "float16"), out_packed, np.int64(row),
            out_nonfinite, np.int32(m), np.int32(h), np.int32(kp))

    def finish():
        bad = cp.flatnonzero(out_nonfinite).get()
        if bad.size:
            raise ValueError(f"LayerNorm output is not finite in rows {bad[:10].tolist()}; nonfinite='raise'")

    return Prepared(kern, grid, block, args, (out_packed, out_nonfinite), finish)


def ln_quant(**kw):
    """Fused LayerNorm + reorder + per-cluster quantization + packing (ln_quant.cu).

    Returns (packed (M, row_bytes) uint8, nonfinite (M,) int32); raises ValueError naming the
    rows whose LayerNorm output was not finite (never a silent code).
    """
    return prepare_ln_quant(**kw)()


def prepare_sdr_encode(*, x, group_size, base_bits, rounding="half_up", out_codes=None, out_flags=None) -> Prepared:
    cp = _cupy()
    host.check_sdr_args(group_size, base_bits, rounding)
    dt = host.check_dtype(x, ["int16", "int8"], name="x")
    if dt == np.int8 and base_bits != 8:
        raise ValueError(f"base_bits={base_bits} does not fit int8 input; allowed with int8: 8")
    m, k = x.shape
    groups = host.ceil_div(k, group_size)
    out_codes = _out(out_codes, (m, host.ceil_div(k, 2)), np.uint8, "out_codes")
    out_flags = _out(out_flags, (m, host.ceil_div(groups, 2)), np.uint8, "out_flags")
    xd, ldx = _rows(x, "x", 1)
    err = cp.zeros(1, dtype=np.int32)
    grid, block = host.sdr_encode_grid(m, k, group_size)
    kern = module("sdr").get_function("sdr_encode_i16" if dt == np.int16 else "sdr_encode_i8")
    args = (xd, np.int64(ldx), np.int32(m), np.int32(k), np.int32(group_size), np.int32(base_bits),
            np.int32(rounding == "ties_even"), out_codes, np.int64(out_codes.shape[1]), out_flags,
            np.int64(out_flags.shape[1]), err)

    def finish():
        if int(err.get()[0]):
            lim = (1 << (base_bits - 1)) - 1
            raise ValueError(f"x has values outside the symmetric base range [-{lim}, {lim}] of base_bits={base_bits}")

    return Prepared(kern, grid, block, args, (out_codes, out_flags), finish)


def sdr_encode(**kw):
    """SDR encode (sdr.cu) along the last axis: packed codes (M, ceil(K/2)), flags (M, ceil(G/2)) uint8."""
    return prepare_sdr_encode(**kw)()


def prepare_sdr_gemm(*, a_codes, a_flags, w_codes, w_flags, k, group_size, acc_bits=64, overflow="wrap",
                     out=None) -> Prepared:
    if overflow != "wrap":
        raise ValueError(f"overflow={overflow!r} is not supported by the SDR GEMM kernel; allowed: 'wrap'")
    host.check_sdr_args(group_size, 16, "half_up")
    acc_bits = int(acc_bits)
    if not 2 <= acc_bits <= 64:
        raise ValueError(f"acc_bits={acc_bits!r} is not allowed; allowed: 2..64")
    k = host.check_positive(k, name="k")
    groups = host.ceil_div(k, group_size)
    m, n = a_codes.shape[0], w_codes.shape[0]
    for name, arr, shape in (("a_codes", a_codes, (m, host.ceil_div(k, 2))),
                             ("a_flags", a_flags, (m, host.ceil_div(groups, 2))),
                             ("w_codes", w_codes, (n, host.ceil_div(k, 2))),
                             ("w_flags", w_flags, (n, host.ceil_div(groups, 2)))):
        host.check_dtype(arr, ["uint8"], name=name)
        host.check_shape(arr, shape, name=name)
    out = _out(out, (m, n), np.int64, "out", 8)
    ad, lda = _rows(a_codes, "a_codes", 1)
    afd, ldaf = _rows(a_flags, "a_flags", 1)
    wd, ldw = _rows(w_codes, "w_codes", 1)
    wfd, ldwf = _rows(w_flags, "w_flags", 1)
    grid, block = host.sdr_gemm_grid(m, n)
    args = (ad, np.int64(lda), afd, np.int64(ldaf), wd, np.int64(ldw), wfd, np.int64(ldwf), np.int32(m),
            np.int32(n), np.int32(k), np.int32(group_size), np.int32(acc_bits), out)
    return Prepared(module("sdr").get_function("sdr_gemm"), grid, block, args, (out,))


def sdr_gemm(**kw):
    """SDR decompression-free GEMM (sdr.cu): packed A (M, K) and weight rows (N, K); int64 (M, N)."""
    return prepare_sdr_gemm(**kw)()


def wxa16_kernel_name(bits: int, m: int) -> str:
    """The NVRTC name expression of the (BITS, M) instantiation in wxa16.cu."""
    return f"wxa16_kernel<{int(bits)}, {int(m)}>"


# Every (BITS, M) instantiation in one NVRTC module: compiled once (about half a minute), then read
# from cupy's on-disk kernel cache by every later process (the campaign's workers, the benchmark).
WXA16_NAMES = tuple(wxa16_kernel_name(b, m) for b in (4, 3) for m in range(1, host.WXA16_MAX_M + 1))


def warm_up() -> float:
    """Compile every kernel module now (and fill cupy's kernel cache); returns the seconds it took."""
    import time

    t0 = time.perf_counter()
    for name in ("lowbit_gemm", "ln_quant", "sdr"):
        module(name)
    module("wxa16", WXA16_NAMES)
    return time.perf_counter() - t0


def prepare_wxa16(*, x, w_packed, scales, zeros, group_size, bits, out=None) -> Prepared:
    cp = _cupy()
    m, k = x.shape
    n = w_packed.shape[0]
    out = _out(out, (m, n), np.float32, "out", 4)
    host.check_wxa16_args(x=x, w_packed=w_packed, scales=scales, zeros=zeros, group_size=group_size, bits=bits,
                          out=out)
    xd, ldx = _rows(x, "x", 2)
    wd, ldw = _rows(w_packed, "w_packed", 16 if bits == 4 else 4)
    sd, lds = _rows(scales, "scales", 2)
    zi = cp.asarray(zeros)
    if bool(((zi < 0) | (zi > (1 << bits) - 1)).any()):
        host.check_wxa16_zeros(zi, bits)  # raises, naming the first bad zero point
    zd = cp.ascontiguousarray(zi.astype(cp.uint8))  # compact: one byte per group
    grid, block, shared = host.wxa16_grid(n, m)
    kern = module("wxa16", WXA16_NAMES).get_function(wxa16_kernel_name(bits, m))
    if shared > 48 * 1024:  # above the default dynamic shared-memory limit: opt in
        kern.max_dynamic_shared_size_bytes = shared
    args = (xd, np.int64(ldx), wd, np.int64(ldw), sd, np.int64(lds), zd, np.int64(zd.shape[1]),
            np.int32(group_size), out, np.int32(n), np.int32(k))
    return Prepared(kern, grid, block, args, (out,), shared_mem=shared)


def wxa16(**kw):
    """W4A16 / W3A16 GEMV (wxa16.cu), M <= 16: float32 (M, N)."""
    return prepare_wxa16(**kw)()


KERNELS = {
    "lowbit_gemm": (lowbit_gemm, "lowbit_gemm"),
    "ln_quant": (ln_quant, "ln_quant"),
    "sdr_encode": (sdr_encode, "sdr_encode"),
    "sdr_gemm": (sdr_gemm, "sdr_gemm"),
    "wxa16": (wxa16, "wxa16"),
}
