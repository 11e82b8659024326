"""Energy per operation and per byte, with their sources.

Integer MAC energy, 45 nm synthesis (BitFusion, Sharma et al., ISCA 2018, as quoted in DESIGN.md):
2-bit 0.063 pJ, 4-bit 0.136 pJ, 8-bit 0.344 pJ, 16-bit 1.085 pJ per MAC (per cycle of a fused unit).
A w-bit x a-bit multiplier's area and switching grow with the product w * a, so energies for other
widths are interpolated log-log in w * a between the published points (``interpolated=True``): 3x3
(product 9) gives 0.063 * (9/4)^(log(0.136/0.063)/log 4) = 0.0989 pJ, labelled *interpolated*.
Products outside [4, 256] extrapolate the nearest segment.

Floating-point MAC (fp16 path, weight-only configurations): Horowitz, "Computing's energy problem",
ISSCC 2014, 45 nm: fp16 multiply 1.1 pJ + fp16 add 0.4 pJ = 1.5 pJ. Vector (non-GEMM) operations:
one fp16 add or multiply, taken as half of that MAC, 0.75 pJ.

DRAM: per-bit energy of the hardware (HBM2 3.9 pJ/bit, O'Connor et al., MICRO 2017; see
:mod:`hwmodel.hardware`). All figures are 45 nm logic: compare configurations with them; do not read
them as the absolute energy of a 4 nm GPU.
"""

from __future__ import annotations

import numpy as np

#: BitFusion 45 nm integer MAC energies, pJ, keyed by operand width (w = a).
BITFUSION_PJ = {2: 0.063, 4: 0.136, 8: 0.344, 16: 1.085}
FP16_MAC_PJ = 1.1 + 0.4  # Horowitz ISSCC 2014: fp16 mult + fp16 add
VECTOR_OP_PJ = FP16_MAC_PJ / 2

_PROD = np.log(np.array([w * w for w in BITFUSION_PJ], dtype=np.float64))
_E = np.log(np.array(list(BITFUSION_PJ.values()), dtype=np.float64))


def int_mac_pj(w_bits, a_bits):
    """Energy of one w-bit x a-bit integer MAC in pJ (vectorized): BitFusion, log-log in w*a."""
    x = np.log(np.asarray(w_bits, dtype=np.float64) * np.asarray(a_bits, dtype=np.float64))
    # piecewise linear in log space, extrapolating the end segments
    idx = np.clip(np.searchsorted(_PROD, x) - 1, 0, len(_PROD) - 2)
    x0, x1, e0, e1 = _PROD[idx], _PROD[idx + 1], _E[idx], _E[idx + 1]
    return np.exp(e0 + (x - x0) * (e1 - e0) / (x1 - x0))


def is_interpolated(w_bits: float, a_bits: float) -> bool:
    """True unless (w, a) is one of BitFusion's published points (2, 4, 8, 16 bits, w = a)."""
    return not (w_bits == a_bits and int(w_bits) in BITFUSION_PJ and w_bits == int(w_bits))


def mac_pj(w_bits, a_bits, *, float_path):
    """MAC energy (pJ): fp16 MAC where ``float_path`` (weight-only / unquantized), else integer."""
    return np.where(float_path, FP16_MAC_PJ, int_mac_pj(np.minimum(w_bits, 16), np.minimum(a_bits, 16)))


def energy_table(widths=(2, 3, 4, 8, 16)) -> list[dict]:
    """Rows (w, a, pJ, source) for the docs and the CLI."""
    rows = []
    for w in widths:
        for a in widths:
            rows.append({"w_bits": w, "a_bits": a, "mac_pj": float(int_mac_pj(w, a)),
                         "source": "interpolated (log-log in w*a)" if is_interpolated(w, a)
                         else "BitFusion 45 nm (published)"})
    return rows
