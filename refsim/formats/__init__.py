"""Checkpoint formats, to and from refsim codes: one module per format (gptq, awq, compressed_tensors,
matmul_nbits; gguf by its own author). Each has ``write(...) -> dict of arrays`` and ``read(dict) -> (codes,
scale, zero, g_idx)`` in the shapes of ``refsim.rptq.gptq.GPTQResult``."""
