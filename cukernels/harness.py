"""Validation harness: run any kernel on property-based cases and compare it with the reference.

A *target* names a kernel contract (the keyword arguments a kernel receives, the output
buffers it fills, and the reference it must match). A *kernel* is any callable -- a CuPy
launcher, a torch function, or a plain numpy function -- called as

    result = kernel(**inputs, **outputs)

where ``inputs`` are arrays of the chosen array module (numpy, cupy or torch; strided and
offset views, not fresh contiguous arrays) plus scalar knobs, and ``outputs`` are ``out_*``
buffers filled with a poison value. The kernel either writes the buffers (and returns None)
or returns its outputs (one array, a tuple in the target's output order, or a dict).

Cases are drawn with hypothesis: odd M, N, K; K not a multiple of the tile or group;
cluster sizes that are not tile multiples; inputs placed at an element offset inside a
wider row (a row stride larger than the row); poisoned outputs; extreme codes and zero
points. Every case is a ``CaseParams`` (a few integers plus a numpy PCG64 seed) that
rebuilds the arrays exactly: ``run_case(kernel, target, params)`` reproduces a failure.

Bit-exact outputs are compared as integers (floats by their IEEE bit patterns) with
``np.array_equal``; a float-result target is compared within the bound its reference states.
A mismatch report gives the first indices, the expected and received values, and their bit
difference (XOR of the bit patterns; for floats also the distance in units in the last place).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from cukernels import host, reference
from golden import strategies as golden_levels

POISON_INT32 = np.int32(-0x21524111)  # 0xDEADBEEF
POISON_INT64 = np.int64(-0x2152411021524111)  # 0xDEADBEEFDEADBEEF
POISON_FLOAT32_BITS = np.uint32(0x7FC0DEAD)  # a quiet NaN with a payload no kernel computes
POISON_UINT8 = np.uint8(0xA5)
POISON_FLOAT16_BITS = {"float16": np.uint16(0x7E5A), "bfloat16": np.uint16(0x7FDA)}  # quiet NaNs with payloads


@dataclass(frozen=True)
class CaseParams:
    """Everything that defines one case; ``seed`` drives numpy's PCG64 for the array contents."""

    target: str
    m: int
    n: int
    k: int
    seed: int
    bits: int = 4
    cluster_sizes: tuple = ()
    fill: str = "random"  # random | min | max | alternating (extreme codes) | patterns (golden's level 1)
    phase: int = 0  # fill "patterns": where the golden pattern cycle starts (golden.strategies.phases)
    offset: int = 0  # element offset of each input inside its (wider) row
    row_pad: int = 0  # extra elements per row: the row stride exceeds the row
    group_size: int = 32
    base_bits: int = 16
    rounding: str = "half_up"
    use_bias: bool = False
    dtype: str = "float32"  # activation dtype of a float-input target: float32 | float16 | bfloat16
    act_order: bool = False  # GPTQ act-order: a permuted g_idx (groups not consecutive along K)
    symmetric: bool = False  # weights without a zero-point tensor (compressed-tensors symmetric)

    def describe(self) -> str:
        fields = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in dataclasses.fields(self))
        return f"CaseParams({fields})"


@dataclass
class Mismatch:
    output: str
    index: tuple
    expected: Any
    received: Any
    bit_difference: str
    ulp: int | None = None


@dataclass
class CaseResult:
    params: CaseParams
    mismatch_count: int = 0
    mismatches: list = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.mismatch_count == 0 and self.error is None


@dataclass
class ValidationReport:
    kernel: str
    target: str
    campaign_seed: int
    cases_run: int = 0
    failures: list = field(default_factory=list)  # CaseResult, in the order found (the last is the shrunk one)
    seconds: float = 0.0
    runner: str = "cukernels.harness.run_case"  # the function that reruns one case of this target

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def crashed(self) -> bool:
        return bool(self.failures) and self.failures[-1].error is not None

    def format(self, max_lines=10) -> str:
        head = (f"{self.kernel} against target {self.target}: {self.cases_run} cases, "
                f"{len(self.failures)} failing, campaign seed {self.campaign_seed}, {self.seconds:.1f} s")
        if self.ok:
            return head + ": zero mismatches"
        worst = self.failures[-1]  # hypothesis replays its minimal failing example last
        lines = [head, f"minimal failing case: {worst.params.describe()}"]
        if worst.error:  # a crash is not a mismatch: nothing was compared
            lines.append(f"  crashed: the kernel raised {worst.error}")
        else:
            lines.append(f"  {worst.mismatch_count} mismatching elements; first {len(worst.mismatches)}:")
        for mm in worst.mismatches[:max_lines]:
            ulp = f", {mm.ulp} ulp" if mm.ulp is not None else ""
            lines.append(f"  {mm.output}{list(mm.index)}: expected {mm.expected!r}, received {mm.received!r}, "
                         f"bit difference {mm.bit_difference}{ulp}")
        lines.append(f"  reproduce: {self.runner}(kernel, cukernels.harness.{worst.params.describe()})")
        return "\n".join(lines)


# --- comparison -------------------------------------------------------------------------------

def _bits_view(a: np.ndarray) -> np.ndarray:
    if a.dtype.kind == "f":
        return a.view({2: np.uint16, 4: np.uint32, 8: np.uint64}[a.dtype.itemsize])
    return a.view({1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}[a.dtype.itemsize])


def _ordered(bits: np.ndarray, width: int) -> np.ndarray:
    """Map float bit patterns to integers whose difference is the distance in ulps."""
    b = bits.astype(np.int64) if width < 64 else bits.view(np.int64)
    sign = np.int64(1) << (width - 1)
    return np.where(b & sign, -(b & (sign - 1)), b)


def compare_exact(name: str, expected: np.ndarray, received: np.ndarray, max_report=10):
    """(mismatch count, first mismatches) of two arrays compared bit for bit."""
    expected = np.ascontiguousarray(expected)
    received = np.ascontiguousarray(received)
    if received.shape != expected.shape or received.dtype != expected.dtype:
        return expected.size, [Mismatch(name, (), f"{expected.dtype}{expected.shape}",
                                        f"{received.dtype}{received.shape}", "shape or dtype differs")]
    eb, rb = _bits_view(expected), _bits_view(received)
    bad = eb != rb
    count = int(bad.sum())
    out = []
    width = expected.dtype.itemsize * 8
    for idx in np.argwhere(bad)[:max_report]:
        i = tuple(int(j) for j in idx)
        xor = int(eb[i] ^ rb[i])
        ulp = None
        if expected.dtype.kind == "f":
            ulp = abs(int(_ordered(np.array([rb[i]]), width)[0]) - int(_ordered(np.array([eb[i]]), width)[0]))
        out.append(Mismatch(name, i, expected[i].item(), received[i].item(), f"0x{xor:0{width // 4}x}", ulp))
    return count, out


def compare_within(name: str, expected: np.ndarray, bound: np.ndarray, received: np.ndarray, max_report=10):
    """Float outputs within an elementwise bound |received - expected| <= bound (NaN never passes)."""
    received = np.asarray(received)
    if received.shape != expected.shape:
        return expected.size, [Mismatch(name, (), str(expected.shape), str(received.shape), "shape differs")]
    err = np.abs(received.astype(np.float64) - expected)
    bad = ~(err <= bound)
    out = []
    for idx in np.argwhere(bad)[:max_report]:
        i = tuple(int(j) for j in idx)
        out.append(Mismatch(name, i, float(expected[i]), float(received[i]),
                            f"|error| {err[i]:.3g} > bound {bound[i]:.3g}"))
    return int(bad.sum()), out


# --- array modules ----------------------------------------------------------------------------

class ArrayModule:
    """Moves numpy arrays to numpy / cupy / torch and back, keeping strides and offsets.

    ``device`` is the torch device the inputs go to: "cuda" for this project's kernels, "cpu" for kernels
    that run on this CPU (cukernels/cpu_targets.py)."""

    def __init__(self, name: str, device: str = "cuda"):
        if name not in ("numpy", "cupy", "torch"):
            raise ValueError(f"xp={name!r} is not allowed; allowed: 'numpy', 'cupy', 'torch'")
        if device not in ("cuda", "cpu"):
            raise ValueError(f"device={device!r} is not allowed; allowed: 'cuda', 'cpu'")
        self.name = name
        self.device = device

    def place(self, a: np.ndarray, offset: int, row_pad: int):
        """``a`` as a view at element ``offset`` inside rows of len + offset + row_pad (junk elsewhere)."""
        a = np.asarray(a)
        if a.ndim == 0:
            return self.put(a)
        flat = a.reshape(-1, a.shape[-1])
        wide = np.empty((flat.shape[0], flat.shape[1] + offset + row_pad), dtype=a.dtype)
        _junk(wide)
        wide[:, offset:offset + flat.shape[1]] = flat
        dev = self.put(wide)
        view = dev[:, offset:offset + flat.shape[1]]
        return view.reshape(a.shape) if a.ndim == 2 else self._reshape_view(view, a.shape)

    def _reshape_view(self, view, shape):
        # A 1-d input keeps its offset (one row); a 3-d one becomes contiguous-in-rows again.
        if len(shape) == 1:
            return view[0]
        return view.reshape(shape)

    def put(self, a: np.ndarray):
        if self.name == "numpy":
            return np.array(a)
        if self.name == "cupy":
            import cupy

            return cupy.asarray(a)
        import torch

        a = np.ascontiguousarray(a)
        if a.dtype.name == "bfloat16":  # ml_dtypes' bfloat16: torch takes the same 16-bit patterns
            return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16).to(self.device)
        return torch.from_numpy(a).to(self.device)

    def get(self, a) -> np.ndarray:
        if isinstance(a, np.ndarray):
            return a
        if hasattr(a, "detach"):
            a = a.detach().cpu()
            if str(a.dtype) == "torch.bfloat16":  # numpy has no bfloat16: ml_dtypes' holds the same bits
                import ml_dtypes
                import torch

                return a.contiguous().view(torch.int16).numpy().view(ml_dtypes.bfloat16)
            return a.numpy()
        if hasattr(a, "get"):
            return a.get()
        return np.asarray(a)

    def synchronize(self):
        if self.name == "cupy":
            import cupy

            cupy.cuda.Device().synchronize()
        elif self.name == "torch" and self.device == "cuda":
            import torch

            torch.cuda.synchronize()


def _junk(a: np.ndarray):
    """Fill with a recognisable non-zero pattern, so that reading outside a view shows."""
    b = a.view(np.uint8)
    b[...] = 0x5A


def poison(shape, dtype) -> np.ndarray:
    dtype = np.dtype(dtype)
    if dtype == np.float32:
        return np.full(shape, POISON_FLOAT32_BITS, dtype=np.uint32).view(np.float32)
    if dtype == np.float16 or dtype.name == "bfloat16":  # a quiet NaN with a payload, in 16 bits
        return np.full(shape, POISON_FLOAT16_BITS[dtype.name], dtype=np.uint16).view(dtype)
    return np.full(shape, {np.dtype(np.int32): POISON_INT32, np.dtype(np.int64): POISON_INT64,
                           np.dtype(np.uint8): POISON_UINT8}[dtype], dtype=dtype)


# --- targets ----------------------------------------------------------------------------------

@dataclass
class Case:
    inputs: dict  # name -> numpy array or scalar knob
    outputs: dict  # out_* name -> (shape, dtype)
    expected: dict  # out_* name -> numpy array (exact) or (value, bound) (float within bound)


@dataclass
class Target:
    name: str
    build: Callable[[CaseParams], Case]
    strategy: Callable  # (hypothesis module, **options) -> strategy of CaseParams
    description: str


def _codes(rng, shape, lo, hi, fill, phase=0, stride=1):
    if fill == "patterns":  # golden's level-1 code patterns, the values of the gemm / pack bundles
        return golden_levels.fill_codes(int(hi - lo).bit_length(), lo < 0, shape, phase, stride=stride)
    if fill == "min":
        return np.full(shape, lo, dtype=np.int32)
    if fill == "max":
        return np.full(shape, hi, dtype=np.int32)
    if fill == "alternating":
        return np.where(np.indices(shape).sum(axis=0) % 2 == 0, lo, hi).astype(np.int32)
    return rng.integers(lo, hi, size=shape, endpoint=True).astype(np.int32)


def _lowbit_case(p: CaseParams) -> Case:
    rng = np.random.Generator(np.random.PCG64(p.seed))
    lo, hi = -(1 << (p.bits - 1)), (1 << (p.bits - 1)) - 1
    sizes = np.array(p.cluster_sizes, dtype=np.int64)
    k = int(sizes.sum())
    a = _codes(rng, (p.m, k), lo, hi, p.fill, p.phase)
    w = _codes(rng, (p.n, k), lo, hi, "max" if p.fill == "min" else ("min" if p.fill == "max" else p.fill), p.phase,
               stride=3)  # golden's gemm level 1 offsets the weight rows by 3: the two cycles meet
    if p.fill == "random":
        z = rng.integers(-2 * hi, 2 * hi, size=sizes.size, endpoint=True).astype(np.int32)
    else:  # extreme zero points: the whole supported range
        z = np.where(np.arange(sizes.size) % 2 == 0, -host.ZERO_POINT_LIMIT, host.ZERO_POINT_LIMIT).astype(np.int32)
    scale_a = (rng.uniform(0.5, 2.0, sizes.size) * 2.0 ** rng.integers(-12, 4, sizes.size)).astype(np.float32)
    scale_w = (rng.uniform(0.5, 2.0, p.n) * 2.0 ** rng.integers(-12, 4, p.n)).astype(np.float32)
    bias = rng.standard_normal(p.n).astype(np.float32) if p.use_bias else None
    prep = host.prepare_lowbit_weights(w, sizes, p.bits)
    isums, y = reference.lowbit_gemm_reference(a, z, w, sizes, scale_a, scale_w, bias)
    c = sizes.size
    return Case(
        inputs={"a_packed": host.pack_lowbit_operand(a, sizes, p.bits), "w_packed": prep["w_packed"], "a_zero": z,
                "w_colsum": prep["w_colsum"], "cluster_offsets": prep["cluster_offsets"], "scale_a": scale_a,
                "scale_w": scale_w, "bias": bias, "bits": p.bits},
        outputs={"out_isums": ((c, p.m, p.n), np.int32), "out_y": ((p.m, p.n), np.float32)},
        expected={"out_isums": isums, "out_y": y},
    )


def _cluster_sizes_strategy(st, max_k, max_clusters=5):
    # Sizes deliberately not multiples of the 32-code tile (and sometimes exactly one tile).
    return st.lists(st.one_of(st.integers(1, 45), st.just(host.TILE_K), st.integers(33, 97)),
                    min_size=1, max_size=max_clusters).filter(lambda s: sum(s) <= max_k).map(tuple)


def _sometimes_big(st, small, big):
    """Mostly ``small`` cases (cheap references), one in eight ``big``: cases that span many thread blocks,
    K tiles or K chunks of the kernels' structure."""
    return st.sampled_from(range(8)).flatmap(lambda i: big if i == 7 else small)


def _lowbit_strategy(st, *, bits=(3, 4), max_mn=80, max_k=256):
    # big: 2 x 2 blocks of 128 x 128 and up to 8 clusters (about 20 K tiles)
    dims = _sometimes_big(st, st.tuples(st.integers(1, max_mn), st.integers(1, max_mn),
                                        _cluster_sizes_strategy(st, max_k)),
                          st.tuples(st.integers(129, 256), st.integers(129, 256), _cluster_sizes_strategy(st, 700, 8)))
    return dims.flatmap(lambda d: st.builds(
        CaseParams, target=st.just("lowbit_gemm"), m=st.just(d[0]), n=st.just(d[1]),
        k=st.just(0), seed=st.integers(0, 2 ** 32 - 1), bits=st.sampled_from(bits),
        cluster_sizes=st.just(d[2]),
        fill=st.sampled_from(["random", "random", "random", "min", "max", "alternating", "patterns"]),
        phase=golden_levels.phases(), offset=st.integers(0, 5), row_pad=st.integers(0, 7), use_bias=st.booleans()))


def _ln_case(p: CaseParams) -> Case:
    from refsim.params import rptq_params
    from refsim.spec import preset

    rng = np.random.Generator(np.random.PCG64(p.seed))
    sizes = np.array(p.cluster_sizes, dtype=np.int64)
    h = int(sizes.sum())
    x = (rng.standard_normal((p.m, h)) * rng.uniform(0.1, 8.0)).astype(np.float32)
    if p.fill != "random":  # outlier channels, as in OPT activations
        x[:, rng.integers(0, h, size=max(1, h // 16))] *= 64
    gamma = rng.uniform(-2, 2, h).astype(np.float32)
    beta = rng.uniform(-1, 1, h).astype(np.float32)
    perm = rng.permutation(h)
    spec = preset("rptq")
    y = reference.layernorm_warp_order(x, gamma, beta, 1e-5)[:, perm]
    off = host.cluster_offsets(sizes)
    lo = np.array([y[:, off[c]:off[c + 1]].min() for c in range(sizes.size)])
    hi = np.array([y[:, off[c]:off[c + 1]].max() for c in range(sizes.size)])
    scale, zero = rptq_params(lo, hi, bits=p.bits, spec=spec)
    scale = scale.astype(np.float32)
    codes = reference.ln_quant_reference(x, gamma, beta, 1e-5, perm, sizes, scale, zero, bits=p.bits, spec=spec)
    plan = host.ln_quant_plan(perm, sizes)
    packed = host.pack_lowbit_operand(codes, sizes, p.bits)
    return Case(
        inputs={"x": x, "gamma": gamma, "beta": beta, "eps": 1e-5, "src_index": plan["src_index"],
                "cluster_of": plan["cluster_of"], "scale": scale, "zero": zero.astype(np.int32), "bits": p.bits,
                "compute_dtype": "float16"},
        outputs={"out_packed": (packed.shape, np.uint8), "out_nonfinite": ((p.m,), np.int32)},
        expected={"out_packed": packed, "out_nonfinite": np.zeros(p.m, dtype=np.int32)},
    )


def _ln_strategy(st, *, bits=(3, 4), max_mn=40, max_k=300):
    return st.builds(
        CaseParams, target=st.just("ln_quant"), m=st.integers(1, max_mn), n=st.just(0), k=st.just(0),
        seed=st.integers(0, 2 ** 32 - 1), bits=st.sampled_from(bits), cluster_sizes=_cluster_sizes_strategy(st, max_k),
        fill=st.sampled_from(["random", "outliers"]), offset=st.integers(0, 5), row_pad=st.integers(0, 7))


def _sdr_values(rng, shape, base_bits, fill, group_size=32, phase=0):
    hi = (1 << (base_bits - 1)) - 1
    if fill == "patterns":  # golden's SDR level-1 groups (ties, overflow boundaries, walking ones, the paper's)
        return golden_levels.fill_sdr(base_bits, group_size, shape, phase)
    if fill == "max":
        return np.where(rng.random(shape) < 0.5, -hi, hi).astype(np.int16 if base_bits == 16 else np.int8)
    if fill == "alternating":  # every magnitude at a rounding boundary: m = 2^j + 2^(j-1) - 1 .. + 1
        j = rng.integers(1, base_bits - 2, size=shape)
        v = (1 << j) + (1 << (j - 1)) + rng.integers(-1, 1, size=shape, endpoint=True)
        v = np.minimum(v, hi)
        return np.where(rng.random(shape) < 0.5, -v, v).astype(np.int16 if base_bits == 16 else np.int8)
    if fill == "min":  # small magnitudes: flags 0, no razoring
        return rng.integers(-7, 7, size=shape, endpoint=True).astype(np.int16 if base_bits == 16 else np.int8)
    mag_bits = rng.integers(0, base_bits, size=shape[:-1] + (1,))  # groups of very different ranges
    v = rng.integers(-hi, hi, size=shape, endpoint=True) >> (base_bits - 1 - mag_bits)
    return np.clip(v, -hi, hi).astype(np.int16 if base_bits == 16 else np.int8)


def _sdr_encode_case(p: CaseParams) -> Case:
    rng = np.random.Generator(np.random.PCG64(p.seed))
    x = _sdr_values(rng, (p.m, p.k), p.base_bits, p.fill, p.group_size, p.phase)
    codes, flags = reference.sdr_encode_reference(x, group_size=p.group_size, base_bits=p.base_bits,
                                                  rounding=p.rounding)
    pc, pf = host.pack_sdr(codes, flags)
    return Case(
        inputs={"x": x, "group_size": p.group_size, "base_bits": p.base_bits, "rounding": p.rounding},
        outputs={"out_codes": (pc.shape, np.uint8), "out_flags": (pf.shape, np.uint8)},
        expected={"out_codes": pc, "out_flags": pf},
    )


def _sdr_encode_strategy(st, *, max_mn=48, max_k=300):
    return st.builds(
        CaseParams, target=st.just("sdr_encode"), m=st.integers(1, max_mn), n=st.just(0), k=st.integers(1, max_k),
        seed=st.integers(0, 2 ** 32 - 1), group_size=st.sampled_from(host.SDR_GROUPS),
        base_bits=st.sampled_from(host.SDR_BASE_BITS), rounding=st.sampled_from(["half_up", "ties_even"]),
        fill=st.sampled_from(["random", "random", "max", "min", "alternating", "patterns"]),
        phase=golden_levels.phases(), offset=st.integers(0, 5), row_pad=st.integers(0, 7))


def _sdr_gemm_case(p: CaseParams) -> Case:
    rng = np.random.Generator(np.random.PCG64(p.seed))
    a = _sdr_values(rng, (p.m, p.k), 16, p.fill, p.group_size, p.phase)
    w = _sdr_values(rng, (p.n, p.k), 8, p.fill, p.group_size, p.phase + 1)
    ac, af = reference.sdr_encode_reference(a, group_size=p.group_size, base_bits=16)
    wc, wf = reference.sdr_encode_reference(w, group_size=p.group_size, base_bits=8)
    expected = reference.sdr_gemm_reference(ac, af, wc, wf, group_size=p.group_size, acc_bits=p.base_bits)
    pac, paf = host.pack_sdr(ac, af)
    pwc, pwf = host.pack_sdr(wc, wf)
    return Case(
        inputs={"a_codes": pac, "a_flags": paf, "w_codes": pwc, "w_flags": pwf, "k": p.k,
                "group_size": p.group_size, "acc_bits": p.base_bits},
        outputs={"out": ((p.m, p.n), np.int64)},
        expected={"out": np.asarray(expected, dtype=np.int64)},
    )


def _sdr_gemm_strategy(st, *, max_mn=40, max_k=300):
    # base_bits carries the accumulator width here: 64, or narrow ones that wrap.
    # big: up to 8 x 8 blocks of 16 x 16 outputs
    dim = _sometimes_big(st, st.integers(1, max_mn), st.integers(100, 128))
    return st.builds(
        CaseParams, target=st.just("sdr_gemm"), m=dim, n=dim,
        k=st.integers(1, max_k), seed=st.integers(0, 2 ** 32 - 1), group_size=st.sampled_from(host.SDR_GROUPS),
        base_bits=st.sampled_from([64, 64, 48, 32, 24]),
        fill=st.sampled_from(["random", "random", "max", "min", "patterns"]), phase=golden_levels.phases(),
        offset=st.integers(0, 5), row_pad=st.integers(0, 7))


def _wxa16_case(p: CaseParams) -> Case:
    rng = np.random.Generator(np.random.PCG64(p.seed))
    groups = host.ceil_div(p.k, p.group_size)
    w = _codes(rng, (p.n, p.k), 0, (1 << p.bits) - 1, p.fill, p.phase)
    x = rng.standard_normal((p.m, p.k)).astype(np.float16)
    scales = (rng.uniform(0.5, 2.0, (p.n, groups)) * 2.0 ** -6).astype(np.float16)
    zeros = rng.integers(0, (1 << p.bits) - 1, size=(p.n, groups), endpoint=True).astype(np.int32)
    y, bound = reference.wxa16_reference(x, w, scales, zeros, group_size=p.group_size)
    return Case(
        inputs={"x": x, "w_packed": host.prepare_wxa16_weights(w, p.bits), "scales": scales, "zeros": zeros,
                "group_size": p.group_size, "bits": p.bits},
        outputs={"out": ((p.m, p.n), np.float32)},
        expected={"out": (y, bound)},
    )


def _wxa16_strategy(st, *, bits=(3, 4), max_mn=16, max_k=600):
    # big: K over several 1024-code chunks of x in shared memory, N over several blocks of columns
    return st.builds(
        CaseParams, target=st.just("wxa16"), m=st.integers(1, max_mn),
        n=_sometimes_big(st, st.integers(1, 70), st.integers(65, 200)),
        k=_sometimes_big(st, st.integers(1, max_k), st.integers(1000, 3100)), seed=st.integers(0, 2 ** 32 - 1),
        bits=st.sampled_from(bits),
        group_size=st.sampled_from([32, 64, 128]),
        fill=st.sampled_from(["random", "random", "min", "max", "patterns"]), phase=golden_levels.phases(),
        offset=st.integers(0, 5), row_pad=st.integers(0, 7))


TARGETS: dict[str, Target] = {
    "lowbit_gemm": Target("lowbit_gemm", _lowbit_case, _lowbit_strategy,
                          "W4A4 / W3A3 GEMM: per-cluster int32 sums and the float32 epilogue, bit-exact"),
    "ln_quant": Target("ln_quant", _ln_case, _ln_strategy,
                       "fused LayerNorm + RPTQ reorder + per-cluster quantization + packing, bit-exact"),
    "sdr_encode": Target("sdr_encode", _sdr_encode_case, _sdr_encode_strategy,
                         "SDR encode (int8 / int16, groups 16 / 32) to packed codes and flags, bit-exact"),
    "sdr_gemm": Target("sdr_gemm", _sdr_gemm_case, _sdr_gemm_strategy,
                       "SDR decompression-free GEMM, wrap accumulator of acc_bits, bit-exact"),
    "wxa16": Target("wxa16", _wxa16_case, _wxa16_strategy,
                    "W4A16 / W3A16 GEMV (M <= 16), float32 result within gamma_K bound"),
}


def get_target(name) -> Target:
    try:
        return TARGETS[name]
    except KeyError:
        raise ValueError(f"target={name!r} is not known; allowed: {', '.join(TARGETS)}") from None


# --- running ----------------------------------------------------------------------------------

def _normalize_result(result, outputs: dict, xp: ArrayModule) -> dict:
    names = list(outputs)
    if result is None:
        return {k: xp.get(v) for k, v in outputs.items()}
    if isinstance(result, dict):
        return {k: xp.get(result[k]) if k in result else xp.get(outputs[k]) for k in names}
    if isinstance(result, (tuple, list)):
        return {k: xp.get(v) for k, v in zip(names, result, strict=True)}
    if len(names) == 1:
        return {names[0]: xp.get(result)}
    raise TypeError(f"kernel returned one array but the target has outputs {names}; return a tuple or dict")


def run_case(kernel: Callable, params: CaseParams, *, xp="numpy", max_report=10) -> CaseResult:
    """Build the case, run the kernel on poisoned outputs and strided inputs, compare."""
    target = get_target(params.target)
    mod = xp if isinstance(xp, ArrayModule) else ArrayModule(xp)
    case = target.build(params)
    inputs = {k: (mod.place(v, params.offset, params.row_pad) if isinstance(v, np.ndarray) else v)
              for k, v in case.inputs.items()}
    outputs = {k: mod.put(poison(shape, dt)) for k, (shape, dt) in case.outputs.items()}
    res = CaseResult(params)
    try:
        got = _normalize_result(kernel(**inputs, **outputs), outputs, mod)
        mod.synchronize()
    except Exception as exc:  # a kernel that raises on a supported case fails that case, as a crash
        res.error = f"{type(exc).__name__}: {exc}"
        return res
    for name, exp in case.expected.items():
        if isinstance(exp, tuple):
            count, mms = compare_within(name, exp[0], exp[1], got[name], max_report)
        else:
            count, mms = compare_exact(name, exp, got[name], max_report)
        res.mismatch_count += count
        res.mismatches.extend(mms[:max(0, max_report - len(res.mismatches))])
    return res


def validate(kernel: Callable, target: str, *, max_examples=100, seed=0, xp="numpy", kernel_name=None,
             shrink=True, progress=None, **strategy_options) -> ValidationReport:
    """Run ``kernel`` on ``max_examples`` hypothesis-drawn cases of ``target``; never raises on a mismatch.

    ``seed`` fixes the campaign (hypothesis draws the same cases for the same seed and
    options); each failure carries its ``CaseParams``, which rebuild the case on its own. ``xp`` is an
    array-module name or an ``ArrayModule`` (e.g. torch on the CPU).
    ``strategy_options`` narrow the draw (e.g. ``bits=(4,)``, ``max_mn=16``).
    """
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hseed
    from hypothesis import strategies as st

    tgt = get_target(target)
    mod = xp if isinstance(xp, ArrayModule) else ArrayModule(xp)
    report = ValidationReport(kernel_name or getattr(kernel, "__name__", repr(kernel)), target, seed)
    start = time.perf_counter()
    phases = [Phase.generate, Phase.shrink] if shrink else [Phase.generate]

    @settings(max_examples=max_examples, deadline=None, database=None, phases=phases, derandomize=False,
              suppress_health_check=list(HealthCheck), report_multiple_bugs=False)
    @hseed(seed)
    @given(params=tgt.strategy(st, **strategy_options))
    def campaign(params):
        report.cases_run += 1
        if progress and report.cases_run % 10 == 0:
            progress(report.cases_run)
        result = run_case(kernel, params, xp=mod)
        if not result.ok:
            report.failures.append(result)
            raise AssertionError("mismatch")

    try:
        campaign()
    except AssertionError:
        pass
    report.seconds = time.perf_counter() - start
    return report
