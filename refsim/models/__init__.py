"""Model families as topologies, and the one forward pass of a decoder block over a scheme.

    topology   the description of a decoder block (norms, linears, reorders, calibration points, bits)
    opt        OPT's topology and family functions
    forward    ``forward(topology, block, x, scheme)``: the block's integer dataflow under any scheme
    model      the whole decoder-only model of any family (embedding, layers, final norm, lm_head)
    floatops   the float steps a block needs, identical on every machine (layer_norm, softmax; rms_norm,
               rope, silu live in refsim.floatops)

A family is a module ``refsim.models.<family>`` exposing TOPOLOGY, MODEL_TYPES, block_meta(hf_config),
layer_arrays(hf_layer) and model_arrays(hf_model) (docs/architecture.md); ``family_of(model_type)``
finds it.
"""

import importlib

from refsim.models.opt import OPT
from refsim.models.topology import MLPKind, NormKind, Topology

FAMILIES = ("opt", "llama")  # module names under refsim.models


def family_of(model_type):
    """The family module whose MODEL_TYPES holds transformers' ``config.model_type``."""
    found = []
    for name in FAMILIES:
        try:
            mod = importlib.import_module(f"refsim.models.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"refsim.models.{name}":
                raise
            continue
        found.extend(getattr(mod, "MODEL_TYPES", ()))
        if model_type in getattr(mod, "MODEL_TYPES", ()):
            return mod
    raise ValueError(f"model_type={model_type!r} is not supported; supported: {', '.join(found)}")


__all__ = ["OPT", "MLPKind", "NormKind", "Topology", "family_of", "FAMILIES"]
