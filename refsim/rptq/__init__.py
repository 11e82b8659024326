"""RPTQ reordered dataflow, GPTQ and the integer OPT decoder block (docs/rptq.md).

Modules (torch / transformers only where marked, imported when that module is imported):

    cluster     k-means channel clustering, deterministic cluster order, permutations (sklearn)
    reorder     applying R1..R5 to LayerNorm gamma/beta and linear weights
    block       the integer OPT decoder block ``opt_block`` (the one forward pass of refsim.models over
                the OPT topology and a refsim.schemes scheme) and ``QuantizedOPTBlock``; stage names
    scalar      scalar twins of the per-cluster integer GEMM and epilogue
    gptq        GPTQ (torch) and round-to-nearest
    calibrate   hooks on a transformers OPT model: per-channel min/max at R1..R5, Hessians (torch)
    pipeline    calibration statistics -> reorders -> GPTQ -> QuantizedOPTBlock
    model_io    saving / loading quantized blocks (safetensors + JSON)
    report      SQNR per stage, per-tensor vs per-cluster, the per-channel range plot (matplotlib)
"""

from refsim.rptq.block import CONFIGS, STAGES, QuantizedOPTBlock, opt_block

__all__ = ["CONFIGS", "STAGES", "QuantizedOPTBlock", "opt_block"]
