"""Float operations with a single rounding that numpy does not offer directly."""

from __future__ import annotations

import functools
import math

import numba
import numpy as np

from refsim.threads import row_spans, run_all


def fused_multiply_add(a, b, c, dtype) -> np.ndarray:
    """fl(a * b + c) rounded once into ``dtype`` (float32 or float16), as an FMA unit computes it.

    a and b are float32/float16 values and c integers of magnitude < 2^53. The product is
    exact in float64 (at most 24 + 24 significant bits). The sum is taken in float64 with
    *round to odd* (TwoSum gives the exact error; an inexact even result steps to its odd
    neighbour), and rounding to odd at 53 bits followed by round-to-nearest-even at
    p <= 24 bits equals a single round-to-nearest-even (53 >= 2p + 2; Boldo and Melquiond,
    "Emulation of FMA and correctly rounded sums: proved algorithms using rounding to odd").
    """
    # Infinite inputs (an overflowed fp16 x) make NaN error terms; they keep t = +-inf.
    with np.errstate(over="ignore", invalid="ignore"):
        p = np.asarray(a, dtype=np.float64) * np.asarray(b, dtype=np.float64)
        zc = np.asarray(c, dtype=np.float64)
        t = p + zc
        bb = t - p
        err = (p - (t - bb)) + (zc - bb)  # TwoSum: t + err == p + c exactly
        mant = np.frexp(t)[0]
        even = np.fmod(np.abs(mant) * 2.0**53, 2.0) == 0.0
        step = np.nextafter(t, np.where(err > 0, np.inf, -np.inf))
        t = np.where((err != 0) & even & np.isfinite(t), step, t)
        return t.astype(dtype)


# A faithful float64 exp (any libm or SIMD implementation: error < 1 ulp, i.e. < 2^-52 relative)
# cannot move the value across a float32 rounding boundary unless it lies within this margin.
_EXP_MARGIN = 2.0**-50
_DECIMAL_DIGITS = 60


def _to_float32_exact(value) -> np.float32:
    """A rational (Fraction or Decimal) rounded once to float32 (ties to even, subnormals, overflow)."""
    from fractions import Fraction

    from refsim.scalar import round_to_format

    return np.float32(float(round_to_format(Fraction(value), "float32")))


def _exp_decimal_f32(x: float) -> np.float32:
    """exp(x) correctly rounded to float32, evaluated in decimal at 60 digits (the slow, exact path)."""
    import decimal

    with decimal.localcontext() as ctx:
        ctx.prec = _DECIMAL_DIGITS
        return _to_float32_exact(decimal.Decimal(x).exp())


def _round_f32_within(approx64, margin, exact, args64) -> np.ndarray:
    """float32 of ``approx64`` (float64 results of a function, relative error < ``margin``), correctly
    rounded: where approx * (1 - margin) and approx * (1 + margin) round to the same float32 value,
    every value within the error bound, the true one included, rounds to it; elsewhere (near a
    float32 rounding boundary: rare) ``exact(arg)`` is used for that element."""
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        lo = (approx64 * (1.0 - margin)).astype(np.float32)
        hi = (approx64 * (1.0 + margin)).astype(np.float32)
    out = hi.copy()
    for idx in zip(*np.nonzero((lo != hi) & np.isfinite(args64)), strict=True):
        out[idx] = exact(float(args64[idx]))
    return out


def exp_float32(x) -> np.ndarray:
    """exp(x) correctly rounded to float32, the same on every machine.

    numpy's float64 exp differs between builds and CPUs (libm, or SIMD kernels chosen at run
    time) in the last float64 bit. Its result is rounded to float32 twice, at exp * (1 - 2^-50)
    and exp * (1 + 2^-50): where both agree, every faithful float64 exp gives that float32
    value, which is then the correctly rounded one. The rare values near a float32 rounding
    boundary are recomputed exactly (decimal arithmetic, 60 digits) and rounded once.
    ``exp_float32_numpy`` is the same rule on numpy's exp (its twin in the tests).
    """
    x32 = np.asarray(x, dtype=np.float32)
    flat = np.ascontiguousarray(x32).reshape(-1)
    out = np.empty(flat.shape, dtype=np.float32)
    near = np.empty(flat.shape, dtype=np.bool_)
    _exp_f32_within(flat, out, near, _EXP_MARGIN)
    for i in np.nonzero(near)[0]:
        out[i] = _exp_decimal_f32(float(flat[i]))
    return out.reshape(x32.shape)


def exp_float32_numpy(x) -> np.ndarray:
    """``exp_float32`` through numpy's float64 exp (any faithful exp gives the same float32 values)."""
    x32 = np.asarray(x, dtype=np.float32)
    x64 = np.atleast_1d(x32).astype(np.float64)
    with np.errstate(over="ignore", under="ignore"):
        e = np.exp(x64)
    return _round_f32_within(e, _EXP_MARGIN, _exp_decimal_f32, x64).reshape(x32.shape)


@numba.njit(cache=True, nogil=True, inline="always")
def exp_f32_bracketed(x, margin):
    """(float32 of exp(x), near): exp in float64 rounded to float32 at exp * (1 - margin) and exp * (1 + margin);
    near is True where the two differ and x is finite (a float32 rounding boundary: the exact path decides)."""
    e = math.exp(np.float64(x))
    lo = np.float32(e * (1.0 - margin))
    hi = np.float32(e * (1.0 + margin))
    return hi, lo != hi and math.isfinite(x)


@numba.njit(cache=True, nogil=True)
def _exp_f32_within(x, out, near, margin):
    for i in range(x.size):
        out[i], near[i] = exp_f32_bracketed(x[i], margin)


@numba.njit(cache=True)
def _fsum(row, partials):
    """CPython's ``math.fsum`` (Shewchuk's partials, then its half-even correction) of a finite row; returns
    (sum, ok): ok False on an infinite or NaN term or an intermediate overflow (the caller asks math.fsum)."""
    n = 0
    for x0 in row:
        x = np.float64(x0)
        if x == 0.0:  # math.fsum never stores a zero: it cannot change the partials' exact sum
            continue
        if not math.isfinite(x):
            return 0.0, False
        i = 0
        for j in range(n):
            y = partials[j]
            if abs(x) < abs(y):
                x, y = y, x
            hi = x + y
            lo = y - (hi - x)
            if lo != 0.0:
                partials[i] = lo
                i += 1
            x = hi
        n = i
        if x != 0.0:
            if not math.isfinite(x) or n == partials.size:
                return 0.0, False
            partials[n] = x
            n += 1
    hi = 0.0
    lo = 0.0
    if n > 0:
        n -= 1
        hi = partials[n]
        while n > 0:
            x = hi
            n -= 1
            y = partials[n]
            hi = x + y
            lo = y - (hi - x)
            if lo != 0.0:
                break
        if n > 0 and ((lo < 0.0 and partials[n - 1] < 0.0) or (lo > 0.0 and partials[n - 1] > 0.0)):
            y = lo * 2.0
            x = hi + y
            if y == x - hi:
                hi = x
    return hi, True


@numba.njit(cache=True, nogil=True)
def _fsum_rows(rows, out, fallback):
    for r in range(rows.shape[0]):
        partials = np.empty(128, dtype=np.float64)  # non-overlapping float64 partials: fewer than 40 ever exist
        total, ok = _fsum(rows[r], partials)
        out[r] = total
        fallback[r] = not ok


def fsum_rows(x) -> np.ndarray:
    """Correctly rounded float64 sums over the last axis (``math.fsum`` per row).

    A correctly rounded sum does not depend on the order of its terms, nor on the BLAS, SIMD
    width or numpy version that a pairwise or blocked sum would: it is the same on every IEEE
    machine, and the same for a channel-permuted row (RPTQ's reordered layout). Computed by a
    compiled port of CPython's algorithm (rows split over ``refsim.threads``); a row with an
    infinite or NaN term, or one whose partial sums overflow, is left to ``math.fsum`` itself
    (its result, or its error). The twin is ``fsum_rows_python`` (``math.fsum`` on every row).
    """
    a = np.asarray(x)
    if a.dtype not in (np.float32, np.float64):
        a = a.astype(np.float64)
    rows = np.ascontiguousarray(a.reshape(-1, a.shape[-1]) if a.ndim else a.reshape(1, 1))
    out = np.empty(rows.shape[0], dtype=np.float64)
    fallback = np.empty(rows.shape[0], dtype=np.bool_)
    run_all(lambda span: _fsum_rows(rows[span[0]:span[1]], out[span[0]:span[1]], fallback[span[0]:span[1]]),
            row_spans(rows.shape[0], 64))
    for r in np.nonzero(fallback)[0]:
        out[r] = math.fsum(rows[r].astype(np.float64).tolist())
    return out.reshape(a.shape[:-1])


def fsum_rows_python(x) -> np.ndarray:
    """``math.fsum`` of every row over the last axis (the specification of ``fsum_rows``)."""
    a = np.asarray(x, dtype=np.float64)
    rows = a.reshape(-1, a.shape[-1]) if a.ndim else a.reshape(1, 1)
    return np.array([math.fsum(r) for r in rows.tolist()], dtype=np.float64).reshape(a.shape[:-1])


# ---------------------------------------------------------------------------------------------
# The LLaMA family's float steps (docs/numerics.md, "LLaMA float steps"): RMSNorm, RoPE tables,
# SiLU. Each is a fixed sequence of IEEE operations and correctly rounded functions, so the same
# on every machine; each mirrors transformers' float32 sequence of operations, differing from it
# only where transformers calls a float32 function (rsqrt, pow, cos, sin, exp) that is not
# correctly rounded. The scalar twins (``*_scalar``) follow the same formulas in Fractions.

# numpy's float64 sqrt and division are correctly rounded (IEEE), so 1 / sqrt(t) has relative
# error < 2^-52; numpy's float64 cos / sin (libm or SIMD, chosen per CPU) are assumed accurate to
# 2^-40 relative for the float32 arguments RoPE produces (|x| < 2^24); anything nearer a float32
# rounding boundary than these margins is recomputed exactly.
_RSQRT_MARGIN = 2.0**-50
_TRIG_MARGIN = 2.0**-40


def _fl32(v):
    """A Fraction rounded once to float32, as a Fraction (the scalar twins' one rounding step)."""
    from refsim.scalar import round_to_format

    return round_to_format(v, "float32")


def rsqrt_float32_exact(t: float) -> np.float32:
    """1 / sqrt(t) correctly rounded to float32, for t > 0, in integers (the exact path and twin).

    With t = n / d, sqrt(d / n) = sqrt(d * 4^k / n) / 2^k; q = isqrt(floor(d * 4^k / n)) has >= 60
    bits, and the value lies in [q, q + 1) / 2^k: exactly q / 2^k if the square root is exact, else
    strictly inside, where every point rounds to float32 as (q + 1/2) / 2^k does (a float32 rounding
    boundary is a multiple of 2^(64 - 25) / 2^k: never strictly between q and q + 1).
    """
    import math
    from fractions import Fraction

    f = Fraction(t)
    if not f > 0:
        raise ValueError(f"rsqrt needs t > 0, got {t!r}")
    n, d = f.numerator, f.denominator
    k = max(0, (128 - (d.bit_length() - n.bit_length())) // 2 + 1)
    num = d << (2 * k)
    q = math.isqrt(num // n)
    exact = num % n == 0 and q * q == num // n
    return _to_float32_exact(Fraction(q, 1 << k) if exact else Fraction(2 * q + 1, 1 << (k + 1)))


def rsqrt_float32(t) -> np.ndarray:
    """1 / sqrt(t) correctly rounded to float32, the same on every machine; t >= 0 float32 (IEEE
    limits: rsqrt(+0) = +inf, rsqrt(+inf) = +0; a negative t or NaN is refused)."""
    t32 = np.asarray(t, dtype=np.float32)
    t64 = np.atleast_1d(t32).astype(np.float64)
    if not np.all(t64 >= 0):
        raise ValueError("rsqrt_float32 needs t >= 0 (no NaN)")
    with np.errstate(divide="ignore"):
        approx = 1.0 / np.sqrt(t64)
    finite = np.isfinite(t64) & (t64 > 0)
    out = _round_f32_within(approx, _RSQRT_MARGIN, rsqrt_float32_exact, np.where(finite, t64, np.nan))
    return np.where(finite, out, approx.astype(np.float32)).reshape(t32.shape)


def rms_norm(x, weight, *, eps, perm=None) -> np.ndarray:
    """RMSNorm over the last axis, the same on every machine (transformers' LlamaRMSNorm in float32):

        S = fsum(x_j^2)                  squares exact in float64; the sum correctly rounded to float64
        v = fl32(S / H)                  float64 division (IEEE), then rounded to float32
        t = fl32(v + fl32(eps))          float32 add
        r = rsqrt_float32(t)             1 / sqrt(t) correctly rounded to float32
        y[j] = fl32(w[j] * fl32(x[perm[j]] * r))    two float32 products, in transformers' order

    transformers computes v = mean(x^2) with a float32 reduction (its order and rounding depend on
    the SIMD width and thread count), adds eps in float32, takes torch.rsqrt in float32 (within a
    few ulp, machine-dependent) and then the same two products. The norm reads x in its original
    order and writes permuted addresses (``perm``; weight given already permuted); the correctly
    rounded sum does not depend on the order, so a channel-permuted input gives the permuted output
    bit for bit. x float32 (..., H), finite (NaN or Inf is refused).
    """
    x32 = np.asarray(x, dtype=np.float32)
    if not np.all(np.isfinite(x32)):
        raise ValueError("rms_norm: x has NaN or Inf values")
    if not (np.isfinite(eps) and eps > 0):
        raise ValueError(f"eps={eps!r} is not allowed; allowed: a finite number > 0")
    x64 = x32.astype(np.float64)
    h = x32.shape[-1]
    with np.errstate(over="ignore"):  # |x| > ~1.8e19: v overflows to inf, r = 0, y = 0 (as in float32 torch)
        v = (fsum_rows(x64 * x64) / h).astype(np.float32)
    t = (v + np.float32(eps)).astype(np.float32)
    r = rsqrt_float32(t)[..., None]
    if perm is not None:
        x32 = x32[..., np.asarray(perm)]
    return (np.asarray(weight, dtype=np.float32) * (x32 * r).astype(np.float32)).astype(np.float32)


def rms_norm_scalar(row, weight, *, eps, perm=None) -> list:
    """The scalar twin of ``rms_norm`` for one row, each step rounded as stated there: the sum of
    squares exactly (Fractions), then rounded; the products of two float32 values exact in Python
    floats (48 bits, no overflow or underflow), each rounded once to float32 (signed zeros kept)."""
    from fractions import Fraction

    from refsim.scalar import round_to_format

    xs = [float(np.float32(v)) for v in row]
    s = float(round_to_format(sum(Fraction(v) ** 2 for v in xs), "float64"))
    with np.errstate(over="ignore"):
        v = np.float32(s / len(xs))
    if np.isinf(v):  # rsqrt(inf) = 0
        r = 0.0
    else:
        r = float(rsqrt_float32_exact(float(_fl32(Fraction(float(v)) + Fraction(float(np.float32(eps)))))))
    order = range(len(xs)) if perm is None else [int(p) for p in perm]
    return [float(np.float32(float(np.float32(w)) * float(np.float32(xs[j] * r))))
            for w, j in zip(weight, order, strict=True)]


def _power_decimal_f32(base: float, e: float) -> np.float32:
    """base^e correctly rounded to float32 (base > 0), in decimal at 60 digits; refused when the
    60-digit value cannot decide the rounding (within 10^-50 of a float32 rounding boundary)."""
    import decimal

    with decimal.localcontext() as ctx:
        ctx.prec = _DECIMAL_DIGITS
        v = decimal.Decimal(base) ** decimal.Decimal(e)
        lo, hi = (_to_float32_exact(v * (1 + s * decimal.Decimal("1e-50"))) for s in (-1, 1))
    if lo != hi:
        raise ArithmeticError(f"{base}^{e} lies too near a float32 rounding boundary to round at 60 digits")
    return lo


def rope_inv_freq(dim: int, theta: float) -> np.ndarray:
    """RoPE's inverse frequencies (dim/2,) float32, transformers' default rope in the same float32 steps:

        e_i = fl32(fl32(2i) / fl32(dim))          torch.arange(0, dim, 2, dtype=float) / dim
        p_i = fl32(theta)^e_i correctly rounded    base ** e (torch: powf, within an ulp)
        inv_freq_i = fl32(1 / p_i)                 1.0 / (...), a float32 division

    Every step but the power is an IEEE float32 operation mirrored exactly; the power is correctly
    rounded here (decimal, 60 digits), where torch's float32 pow may differ by an ulp.
    """
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 2 or dim % 2:
        raise ValueError(f"dim={dim!r} is not allowed; allowed: an even integer >= 2")
    th = np.float32(theta)
    if not (np.isfinite(th) and th > 0):
        raise ValueError(f"theta={theta!r} is not allowed; allowed: a finite number > 0")
    e = (np.arange(0, dim, 2, dtype=np.float32) / np.float32(dim)).astype(np.float32)
    p = np.array([_power_decimal_f32(float(th), float(v)) for v in e], dtype=np.float32)
    return (np.float32(1.0) / p).astype(np.float32)


def rope_inv_freq_scalar(dim: int, theta: float) -> list:
    from fractions import Fraction

    th = Fraction(float(np.float32(theta)))
    out = []
    for i in range(0, dim, 2):
        e = _fl32(Fraction(i) / dim)
        p = Fraction(float(_power_decimal_f32(float(th), float(e))))
        out.append(_fl32(1 / p))
    return out


@functools.lru_cache(maxsize=4)
def _pi_decimal(prec: int):
    """pi at ``prec`` digits (the decimal module documentation's recipe)."""
    import decimal

    with decimal.localcontext() as ctx:
        ctx.prec = prec + 2
        three = decimal.Decimal(3)
        lasts, t, s, n, na, d, da = 0, three, 3, 1, 0, 0, 24
        while s != lasts:
            lasts = s
            n, na = n + na, na + 8
            d, da = d + da, da + 32
            t = (t * n) / d
            s += t
        ctx.prec = prec
        return +s


def sin_cos_decimal(x: float):
    """(sin x, cos x) as Decimals at 60 digits: x reduced by pi/2 (pi at 80 digits), Taylor series."""
    import decimal

    with decimal.localcontext() as ctx:
        ctx.prec = _DECIMAL_DIGITS + 25
        X = decimal.Decimal(x)
        half_pi = _pi_decimal(ctx.prec) / 2
        k = int((X / half_pi).to_integral_value(rounding=decimal.ROUND_HALF_EVEN))
        r = X - k * half_pi  # |r| <= pi/4
        r2, term, sn, i = r * r, r, r, 1
        while True:  # sin r = r - r^3/3! + ...
            term = -term * r2 / ((i + 1) * (i + 2))
            i += 2
            if abs(term) < decimal.Decimal(10) ** -(_DECIMAL_DIGITS + 20):
                break
            sn += term
        term, cs, i = decimal.Decimal(1), decimal.Decimal(1), 0
        while True:  # cos r = 1 - r^2/2! + ...
            term = -term * r2 / ((i + 1) * (i + 2))
            i += 2
            if abs(term) < decimal.Decimal(10) ** -(_DECIMAL_DIGITS + 20):
                break
            cs += term
        sin, cos = ((sn, cs), (cs, -sn), (-sn, -cs), (-cs, sn))[k % 4]
        ctx.prec = _DECIMAL_DIGITS
        return +sin, +cos


def _sin_f32_exact(x):
    return _to_float32_exact(sin_cos_decimal(x)[0])


def _cos_f32_exact(x):
    return _to_float32_exact(sin_cos_decimal(x)[1])


def rope_angles(positions, inv_freq) -> np.ndarray:
    """freqs = fl32(fl32(pos) * inv_freq), (T, dim/2) float32, as transformers forms them
    (``position_ids.float() * inv_freq``: one float32 product per element)."""
    pos = np.asarray(positions)
    if pos.ndim != 1 or not np.issubdtype(pos.dtype, np.integer) or (pos.size and (pos.min() < 0 or
                                                                                   pos.max() >= 2**24)):
        raise ValueError("positions must be a 1-D integer array in [0, 2^24)")
    return (pos.astype(np.float32)[:, None] * np.asarray(inv_freq, dtype=np.float32)[None, :]).astype(np.float32)


def rope_cos_sin(positions, inv_freq):
    """(cos, sin), each (T, dim) float32: emb = concat(freqs, freqs) (transformers' rotate_half
    convention, ``rope_angles``), cos(emb) and sin(emb) correctly rounded to float32.

    transformers takes emb.cos() and emb.sin() in float32 (SIMD kernels, within an ulp or so, and
    different between CPUs); here float64 cos/sin rounded to float32 where the 2^-40 margin decides
    it, and the exact decimal value elsewhere. The attention scaling of the default rope is 1.
    """
    freqs = rope_angles(positions, inv_freq)
    f64 = freqs.astype(np.float64)
    cos = _round_f32_within(np.cos(f64), _TRIG_MARGIN, _cos_f32_exact, f64)
    sin = _round_f32_within(np.sin(f64), _TRIG_MARGIN, _sin_f32_exact, f64)
    return np.concatenate([cos, cos], axis=-1), np.concatenate([sin, sin], axis=-1)


def rope_cos_sin_scalar(positions, inv_freq):
    """The scalar twin of ``rope_cos_sin``: every angle by Fractions, every cos/sin by decimal."""
    from fractions import Fraction

    cos, sin = [], []
    for p in positions:
        row = [float(_fl32(Fraction(int(p)) * Fraction(float(np.float32(f))))) for f in inv_freq]
        c = [float(_cos_f32_exact(a)) for a in row]
        s = [float(_sin_f32_exact(a)) for a in row]
        cos.append(c + c)
        sin.append(s + s)
    return cos, sin


def silu(x) -> np.ndarray:
    """SiLU, the same on every machine: y = fl32(x / fl32(1 + exp_float32(-x))).

    torch's float32 silu computes x / (1 + exp(-x)) with its own float32 exp; here the exp is
    correctly rounded and the add and the division are IEEE float32 operations. For x < about
    -88.7, exp(-x) overflows to inf and y = -0.0, as in torch; silu(+inf) = inf, silu(-inf) = NaN.
    """
    x32 = np.asarray(x, dtype=np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        d = (np.float32(1.0) + exp_float32(-x32)).astype(np.float32)
        return (x32 / d).astype(np.float32)


def silu_scalar(x: float) -> float:
    """The scalar twin of ``silu`` for one finite float32 x (decimal exp, Fraction steps)."""
    import math
    from fractions import Fraction

    x = float(np.float32(x))
    if x < -104:  # exp(-x) > 2^150 overflows float32 (and may overflow decimal's exponent range): x / inf
        return -0.0
    e = np.float32(0.0) if x > 104 else _exp_decimal_f32(-x)  # below 2^-150: rounds to +0
    if not np.isfinite(e):  # x in [-104, about -88.7]: exp(-x) rounds to inf
        return -0.0
    y = _fl32(Fraction(x) / _fl32(1 + Fraction(float(e))))
    return math.copysign(0.0, x) if y == 0 else float(y)  # a zero quotient has the sign of x (d > 0)
