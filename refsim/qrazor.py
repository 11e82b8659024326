"""The full QRazor path and its accumulator analysis (QRazor, arXiv 2501.13331; DESIGN.md "SDR").

    1. static absmax calibration to the base precision (the running max of |x| over calibration
       batches): s = fl32(amax / (2^(b-1) - 1)), q = round(x / s) clamped to +-(2^(b-1) - 1)
       (the ``qrazor`` preset: division, ties to even, narrow symmetric range, saturate);
       weights int8 per output channel, activations int16 per tensor, KV cache int8 per tensor;
    2. SDR (``refsim.sdr_encode``, through ``refsim.qtensor.sdr_quantize``) per group of g along K;
    3. the decompression-free GEMM (``refsim.sdr_gemm``, through ``refsim.qtensor.qgemm``) under an
       accumulator rule;
    4. scaling back with the float32 epilogue (``refsim.float_epilogue``):
       y[m, n] = fl32(fl32(fl32(acc[m, n]) * s_a) * s_w[n]).

Configurations (``CONFIGS``): W4A4 (weights and activations keep 3 magnitude bits, the KV cache
stays int8), W4A4KV4 (the KV cache is razored to 4-bit codes too), W4A8 (activations keep 7).
An operand left at its base precision is razored with keep = 7 on int8, which is lossless
(every flag 0), so every product goes through the same GEMM.

GEMM orientation: x (M, K) @ y (K, N); a weight operand is y, with output channels along N.
(A torch ``nn.Linear`` weight is (N, K): pass ``weight.T``.)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from refsim.accumulate import signed_bits
from refsim.checks import check_choice
from refsim.gemm import AccBitsNeeded, acc_bits_worst_case
from refsim.metrics import sqnr_db
from refsim.params import absmax_params
from refsim.qtensor import qgemm, sdr_quantize
from refsim.requant import float_epilogue
from refsim.sdr import FLAG_BITS, check_group_size, check_keep, sdr_acc_bits_needed, spec_sdr_rounding
from refsim.spec import NumericsSpec, preset

ROLES = ("activation", "weight", "kv")
LOSSLESS_INT8_KEEP = 7  # keep 7 of an int8's 7 magnitude bits: every flag is 0


@dataclass(frozen=True)
class QRazorConfig:
    """Base precisions and kept magnitude bits of each operand role, and the SDR group size.

    ``*_keep = None`` leaves that role at its base precision (int8 only: lossless SDR). ``spec``
    holds the numerics: the base-precision quantization (signed narrow), the SDR rounding
    (spec.sdr_rounding) and the accumulator (spec.acc_bits, spec.acc_overflow)."""

    name: str
    w_keep: int | None = 3
    a_keep: int | None = 3
    kv_keep: int | None = None
    group_size: int = 16
    w_bits: int = 8
    a_bits: int = 16
    kv_bits: int = 8
    spec: NumericsSpec = preset("qrazor")

    def __post_init__(self):
        check_group_size(self.group_size)
        check_razor_spec(self.spec)
        for role in ROLES:
            bits, keep = self.role(role)
            check_keep(keep, bits)

    def role(self, role: str) -> tuple[int, int]:
        """(base_bits, keep) of ``role`` (activation, weight or kv)."""
        check_choice(role, ROLES, name="role")
        bits, keep = {"activation": (self.a_bits, self.a_keep), "weight": (self.w_bits, self.w_keep),
                      "kv": (self.kv_bits, self.kv_keep)}[role]
        if keep is None:
            if bits != 8:
                raise ValueError(f"{role}: keep=None (no razoring) needs base_bits=8, got {bits}")
            keep = LOSSLESS_INT8_KEEP
        return bits, keep


CONFIGS = {
    "W4A4": dict(w_keep=3, a_keep=3, kv_keep=None),
    "W4A4KV4": dict(w_keep=3, a_keep=3, kv_keep=3),
    "W4A8": dict(w_keep=3, a_keep=7, kv_keep=None),
}


def check_razor_spec(spec) -> NumericsSpec:
    """A spec SDR can take: signed narrow base codes (|x| <= 2^(b-1) - 1, the symmetric range the
    razoring assumes) and an SDR rounding it implements."""
    spec_sdr_rounding(spec)
    if not (spec.signed and spec.narrow):
        raise ValueError(f"QRazor's base precision is the signed narrow range: the spec has signed={spec.signed}, "
                         f"narrow={spec.narrow}; allowed: signed=True, narrow=True (the 'qrazor' preset)")
    return spec


def qrazor_config(name: str, *, group_size=16, spec: NumericsSpec | None = None) -> QRazorConfig:
    """The named configuration (W4A4, W4A4KV4, W4A8) at ``group_size`` (8..128 in the paper), under
    ``spec`` (default: the ``qrazor`` preset)."""
    check_choice(name, tuple(CONFIGS), name="name")
    return QRazorConfig(name=name, group_size=group_size, spec=preset("qrazor") if spec is None else spec,
                        **CONFIGS[name])


# --- 1. static absmax calibration -------------------------------------------------------------

class AbsmaxCalibrator:
    """Running max of |x| over calibration batches, per tensor (axis=None) or per channel.

    ``scale(bits)`` is ``refsim.absmax_params`` of the running max: s = fl32(amax / (2^(b-1) - 1)),
    s = 1 for an all-zero channel. Data beyond the calibrated range saturates at quantization.
    """

    def __init__(self, *, axis=None):
        self.axis = axis
        self.amax = None
        self.batches = 0

    def update(self, x) -> "AbsmaxCalibrator":
        x = np.asarray(x)
        if not np.issubdtype(x.dtype, np.floating):
            raise TypeError(f"x must be a float array, got dtype {x.dtype}")
        if not np.all(np.isfinite(x)):
            raise ValueError("x has non-finite values; absmax calibration needs finite data")
        a = np.abs(x.astype(np.float32))
        if self.axis is None:
            batch = a.max() if a.size else np.float32(0)
        else:
            ax = self.axis % x.ndim
            batch = a.max(axis=tuple(i for i in range(x.ndim) if i != ax))
        batch = np.asarray(batch, dtype=np.float32)
        if self.amax is not None and batch.shape != self.amax.shape:
            raise ValueError(f"x has {batch.shape} channels along axis {self.axis}; earlier batches had "
                             f"{self.amax.shape}")
        self.amax = batch if self.amax is None else np.maximum(self.amax, batch)
        self.batches += 1
        return self

    def scale(self, bits: int, *, spec: NumericsSpec | None = None) -> np.ndarray:
        """``absmax_params`` of the running max under ``spec`` (default: the ``qrazor`` preset)."""
        if self.amax is None:
            raise ValueError("no calibration batch was seen; call update(x) first")
        return absmax_params(self.amax, bits=bits, axis=None if self.amax.ndim == 0 else 0,
                             spec=preset("qrazor") if spec is None else spec)


# --- 2. razoring a tensor ---------------------------------------------------------------------

class RazoredTensor(NamedTuple):
    base: np.ndarray  # base-precision ints (int32), before razoring
    codes: np.ndarray  # SDR codes (int8)
    flags: np.ndarray  # SDR shifts (uint8)
    scale: np.ndarray  # float32: a scalar, or one per output channel
    base_bits: int
    keep: int
    group_size: int
    axis: int  # the grouped (reduced) axis

    @classmethod
    def from_qtensor(cls, qt) -> "RazoredTensor":
        """The record of an SDR ``refsim.qtensor.QuantizedTensor`` (``refsim.qtensor.sdr_quantize``)."""
        return cls(qt.sdr.base, qt.codes, qt.sdr.flags, np.asarray(qt.scale, dtype=np.float32), qt.sdr.base_bits,
                   qt.sdr.keep, qt.sdr.group_size, qt.sdr.axis)

    def qtensor(self, *, transpose=False, spec: NumericsSpec | None = None, rounding="half_up"):
        """This tensor as an SDR ``refsim.qtensor.QuantizedTensor``; ``transpose`` gives a (K, N) operand as the
        (N, K) weight ``refsim.qtensor.qgemm`` takes (codes, flags and base transposed, axis 1)."""
        from refsim.qtensor import Granularity, QuantizedTensor, SDRFields

        spec = preset("qrazor") if spec is None else spec
        codes, flags, base, axis = self.codes, self.flags, self.base, self.axis
        if transpose:
            codes, flags, base, axis = codes.T, flags.T, base.T, 1 - axis
        scale = np.asarray(self.scale)
        gran, sax = (Granularity.TENSOR, None) if scale.ndim == 0 or scale.size == 1 else (Granularity.AXIS,
                                                                                              1 - axis)
        return QuantizedTensor(codes, scale, np.zeros((), np.int64), gran, self.keep + 1, True, spec, axis=sax,
                               sdr=SDRFields(flags, self.group_size, self.keep, self.base_bits, base, axis, rounding))

    def effective_bits(self) -> float:
        """Stored bits per element: (1 + keep) per code plus 4 per group flag; for whole groups
        this is (1 + keep) + 4 / g; a ragged last group still carries a whole flag. keep =
        base_bits - 1 is no razoring at all (every flag 0, none stored): base_bits."""
        if self.keep == self.base_bits - 1:
            return float(self.base_bits)
        return ((1 + self.keep) * self.codes.size + FLAG_BITS * self.flags.size) / max(self.codes.size, 1)


def razor(x, scale, *, base_bits, keep, group_size, axis, scale_axis=None, spec: NumericsSpec) -> RazoredTensor:
    """Quantize float ``x`` to the base precision with ``scale`` (per tensor, or per channel along
    ``scale_axis``) under ``spec`` (signed narrow, e.g. the ``qrazor`` preset), then SDR along
    ``axis`` with spec.sdr_rounding (``refsim.qtensor.sdr_quantize``)."""
    check_razor_spec(spec)
    return RazoredTensor.from_qtensor(sdr_quantize(x, scale, base_bits=base_bits, keep=keep, group_size=group_size,
                                                   axis=axis, scale_axis=scale_axis, spec=spec))


# --- 3 and 4. the product ---------------------------------------------------------------------

@dataclass
class QRazorResult:
    output: np.ndarray  # float32 (M, N)
    reference: np.ndarray  # float64 x @ y of the float inputs
    sqnr_db: float
    acc: np.ndarray  # accumulator values (int32 for acc_bits <= 32, else int64)
    x: RazoredTensor
    y: RazoredTensor
    acc_needed: AccBitsNeeded | None = None
    notes: dict = field(default_factory=dict)


def _calibrated_scale(data, calibration, role, bits, scale_axis, spec):
    cal = AbsmaxCalibrator(axis=scale_axis)
    for batch in ([data] if calibration is None else calibration):
        cal.update(batch)
    return cal.scale(bits, spec=spec)


def qrazor_matmul(x, y, *, config: QRazorConfig, x_role="activation", y_role="weight", x_calibration=None,
                  y_calibration=None, measure_acc=False) -> QRazorResult:
    """x (M, K) @ y (K, N) through the full QRazor path (module docstring), float32 out.

    Roles pick base precision, kept bits and scale granularity from ``config``: activation
    (per tensor), kv (per tensor), weight (only y; per output channel, i.e. per column).
    ``*_calibration``: iterables of calibration batches for the static absmax (default: the
    operand itself). Every numerics rule is the config's spec's: the absmax scales, the base codes,
    the SDR rounding and the accumulator (spec.acc_bits wide, spec.acc_overflow wrap / saturate /
    raise, in group order, ``refsim.sdr_gemm``). ``measure_acc`` adds the bits the data needed.
    """
    if not isinstance(config, QRazorConfig):
        raise TypeError(f"config must be a QRazorConfig (e.g. refsim.qrazor.qrazor_config('W4A4')), got "
                        f"{type(config).__name__}")
    check_choice(x_role, ("activation", "kv"), name="x_role")
    check_choice(y_role, ROLES, name="y_role")
    x = np.asarray(x)
    y = np.asarray(y)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[0]:
        raise ValueError(f"x and y must be (M, K) and (K, N), got shapes {x.shape} and {y.shape}")
    g = config.group_size
    xb, xk = config.role(x_role)
    yb, yk = config.role(y_role)
    y_scale_axis = 1 if y_role == "weight" else None
    spec = config.spec
    sx = _calibrated_scale(x, x_calibration, x_role, xb, None, spec)
    sy = _calibrated_scale(y, y_calibration, y_role, yb, y_scale_axis, spec)
    rx = razor(x, sx, base_bits=xb, keep=xk, group_size=g, axis=1, spec=spec)
    ry = razor(y, sy, base_bits=yb, keep=yk, group_size=g, axis=0, scale_axis=y_scale_axis, spec=spec)
    # y is (K, N) here (x @ y); qgemm takes the (N, K) weight orientation: the view, not a copy
    acc = qgemm(rx.qtensor(), ry.qtensor(transpose=True), spec=spec)
    out = float_epilogue(acc, sx.reshape(1), sy)
    ref = x.astype(np.float64) @ y.astype(np.float64)
    need = sdr_acc_bits_needed(rx.codes, rx.flags, ry.codes, ry.flags, group_size=g) if measure_acc else None
    return QRazorResult(out, ref, sqnr_db(ref, out), acc, rx, ry, need)


# --- accumulator analysis ---------------------------------------------------------------------

def sdr_max_magnitude(base_bits: int, keep: int) -> int:
    """Largest |decode| of an SDR code: (2^keep - 1) << (base_bits - 1 - keep).

    Proof: decode = r << f with r <= 2^keep - 1 (the overflow floor) and f = L - keep <=
    base_bits - 1 - keep (L <= base_bits - 1 for the symmetric range); with f = 0, |x| <=
    2^keep - 1. The base value (2^keep - 1) << (base_bits - 1 - keep) razors to itself, so the
    bound is attained. (int16, keep 3: 7 << 12 = 28672; int8, keep 3: 7 << 4 = 112.)
    """
    keep = check_keep(keep, base_bits)
    return ((1 << keep) - 1) << (base_bits - 1 - keep)


@dataclass(frozen=True)
class AccumulatorAnswer:
    k: int
    a_bits: int
    w_bits: int
    a_keep: int
    w_keep: int
    group_size: int
    acc_bits: int
    worst_case_bits: int  # proven and attained bound for the SDR product, any summation order
    base_worst_case_bits: int  # the same for the unrazored base-precision product
    group_sum_bits: int  # the group adder: g products of codes, before the shift
    max_shift: int  # largest f_a + f_w
    enough: bool  # acc_bits >= worst_case_bits
    max_k: int  # largest K whose worst case fits acc_bits
    measured: AccBitsNeeded | None = None
    measured_on: str = ""

    def text(self) -> str:
        verdict = "yes" if self.enough else "no"
        lines = [
            f"Is a {self.acc_bits}-bit accumulator enough for K = {self.k}, int{self.a_bits} activations "
            f"(keep {self.a_keep}) x int{self.w_bits} weights (keep {self.w_keep}), group {self.group_size}? "
            f"{verdict.upper()}, in the worst case.",
            f"  worst case (proven, attained): {self.worst_case_bits} bits = signed bits of K * "
            f"{sdr_max_magnitude(self.a_bits, self.a_keep)} * {sdr_max_magnitude(self.w_bits, self.w_keep)}",
            f"  without SDR (int{self.a_bits} x int{self.w_bits} base precision): {self.base_worst_case_bits} bits",
            f"  a {self.acc_bits}-bit accumulator is safe for K <= {self.max_k} whatever the data",
            f"  group adder: {self.group_sum_bits} bits (g = {self.group_size} code products); shifter: up to "
            f"<< {self.max_shift}",
        ]
        if self.measured is not None:
            lines.append(f"  measured on {self.measured_on}: final {self.measured.final} bits, group-order "
                         f"partial sums {self.measured.partial} bits, any order {self.measured.bound} bits")
        return "\n".join(lines)


def accumulator_question(k, *, a_bits=16, w_bits=8, a_keep=3, w_keep=3, group_size=16, spec: NumericsSpec,
                         measured: AccBitsNeeded | None = None, measured_on="") -> AccumulatorAnswer:
    """The hardware designer's question: does the spec's accumulator (``spec.acc_bits``, the only
    field read) hold every SDR product sum over K (worst case, proven bound), and what did real
    data need (``measured``)."""
    g = check_group_size(group_size)
    if not isinstance(spec, NumericsSpec):
        raise TypeError(f"spec must be a refsim.NumericsSpec (e.g. refsim.preset('qrazor')), got {type(spec).__name__}")
    acc_bits = spec.acc_bits
    amax = sdr_max_magnitude(a_bits, a_keep)
    wmax = sdr_max_magnitude(w_bits, w_keep)
    worst = acc_bits_worst_case(k, (-amax, amax), (-wmax, wmax))
    alim, wlim = (1 << (a_bits - 1)) - 1, (1 << (w_bits - 1)) - 1
    base = acc_bits_worst_case(k, (-alim, alim), (-wlim, wlim))
    ra, rw = (1 << a_keep) - 1, (1 << w_keep) - 1
    group_bits = int(signed_bits(np.int64(g * ra * rw)))
    max_k = ((1 << (acc_bits - 1)) - 1) // (amax * wmax)
    return AccumulatorAnswer(int(k), a_bits, w_bits, a_keep, w_keep, g, int(acc_bits), worst, base, group_bits,
                             (a_bits - 1 - a_keep) + (w_bits - 1 - w_keep), worst <= acc_bits, max_k,
                             measured, measured_on)


# --- synthetic data (no model hub here: stated generators) -------------------------------------

def heavy_tailed_activations(m, k, *, seed=0, channel_seed=0, df=3.0, outlier_fraction=0.01,
                             outlier_scale=20.0) -> np.ndarray:
    """float32 (m, k): Student-t(df) noise, with a fixed set of outlier channels (chosen by
    ``channel_seed``, ``outlier_fraction`` of k, at least one) scaled by ``outlier_scale``: the
    shape of LLM activations (a few channels carry 10-100x larger values in every token)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_t(df, size=(m, k))
    ch = np.random.default_rng(channel_seed).choice(k, size=max(1, round(outlier_fraction * k)), replace=False)
    x[:, ch] *= outlier_scale
    return x.astype(np.float32)


def gaussian_weights(k, n, *, seed=0) -> np.ndarray:
    """float32 (k, n) ~ N(0, 1/k)."""
    return (np.random.default_rng(seed).standard_normal((k, n)) / np.sqrt(k)).astype(np.float32)


def sqnr_table(configs=("W4A4", "W4A8"), group_sizes=(16, 32, 128), *, m=128, k=4096, n=128, seed=0,
               calibration_batches=4, progress=None, spec: NumericsSpec | None = None) -> list[dict]:
    """SQNR (dB) of the QRazor path against the float product, on heavy-tailed activations
    (``heavy_tailed_activations``, calibrated on ``calibration_batches`` other batches with the
    same outlier channels) and Gaussian weights; one row per (config, group size).
    ``qk_sqnr_db``: the attention-score product q (m, 128) @ k_cache^T (128, m) of two such
    heavy-tailed tensors, q an activation and k_cache in the KV role (razored under W4A4KV4).
    ``spec``: the numerics of every configuration (``qrazor_config``; None = the ``qrazor`` preset)."""
    x = heavy_tailed_activations(m, k, seed=seed + 1000)
    cal = [heavy_tailed_activations(m, k, seed=seed + i) for i in range(calibration_batches)]
    w = gaussian_weights(k, n, seed=seed + 2000)
    q = heavy_tailed_activations(m, 128, seed=seed + 3000, channel_seed=1)
    kc = heavy_tailed_activations(m, 128, seed=seed + 4000, channel_seed=1)
    rows = []
    for name in configs:
        for g in group_sizes:
            cfg = qrazor_config(name, group_size=g, spec=spec)
            res = qrazor_matmul(x, w, config=cfg, x_calibration=cal)
            qk = qrazor_matmul(q, kc.T, config=cfg, y_role="kv")
            rows.append(dict(config=name, group_size=g, sqnr_db=res.sqnr_db, qk_sqnr_db=qk.sqnr_db,
                             a_effective_bits=res.x.effective_bits(), w_effective_bits=res.y.effective_bits(),
                             kv_effective_bits=qk.y.effective_bits()))
            if progress:
                progress(rows[-1])
    return rows
