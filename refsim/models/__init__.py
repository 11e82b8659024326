"""Model families as topologies, and the one forward pass of a decoder block over a scheme.

    topology   the description of a decoder block (norms, linears, reorders, calibration points, bits)
    opt        OPT's topology
    forward    ``forward(topology, block, x, scheme)``: the block's integer dataflow under any scheme
    floatops   the float steps a block needs, identical on every machine (layer_norm, softmax; rms_norm,
               rope, silu live in refsim.floatops)
"""

from refsim.models.opt import OPT
from refsim.models.topology import MLPKind, NormKind, Topology

__all__ = ["OPT", "MLPKind", "NormKind", "Topology"]
