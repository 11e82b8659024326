"""The QRazor SDR path of the OPT block (DESIGN.md "SDR"; QRazor, arXiv 2501.13331).

The same forward pass as ``refsim.rptq.block`` (one dataflow, ``refsim.models.forward``), under the
QRazor scheme (``refsim.schemes.QRazorScheme``), on the block's layout (groups of g consecutive
channels are taken after reordering); every product is ``refsim.qtensor.qgemm`` of SDR tensors:
static absmax base precision (``qrazor`` preset; weights int8 per output row, activations int16
per tensor, K/V int8 per tensor), SDR per group of ``group_size`` along the product's reduced
axis, the decompression-free ``refsim.sdr_gemm`` under the spec's accumulator, and the float32
epilogue; the bias is then added in float32 (the order of ``refsim.float_epilogue``).

Static calibration: an activation's absmax is that of its recorded calibration range
(``stat.{point}.min/max``); probabilities have the range [0, 1] (s = 1/32767); weights use their
own rows. Configurations: ``refsim.qrazor.CONFIGS`` (W4A4: K/V stay int8, losslessly razored;
W4A4KV4: K/V razored to 4-bit codes; W4A8: activations keep 7 bits).

Stages: the names of ``block.STAGES``; "*_acc" are (M, N) int64 sums (attention ones per head,
stacked), activation codes are SDR codes with their "*_flags" ("q_codes", "k_codes", "v_codes",
"probs_codes" per head: (heads, ...)).
"""

from __future__ import annotations

from refsim.models.forward import forward
from refsim.models.opt import OPT
from refsim.schemes import PROB_RANGE, qrazor_scheme

__all__ = ["PROB_RANGE", "opt_block_sdr"]


def opt_block_sdr(block, x, *, qrazor="W4A4", group_size=16, spec=None) -> dict:
    """QRazor configuration ``qrazor`` (a name in refsim.qrazor.CONFIGS) of the block on x (T, hidden):
    the one forward pass (``refsim.models.forward``) over the OPT topology and ``refsim.schemes.QRazorScheme``."""
    return forward(OPT, block, x, qrazor_scheme(qrazor, group_size=group_size, spec=spec))
