"""Checkpoint and weight formats of other libraries, to and from refsim integer codes: one module per
format (gptq, awq, compressed_tensors, matmul_nbits, int4pack; gguf reads llama.cpp's GGUF blocks).
The writers take ``write(...) -> dict of arrays`` and the readers ``read(dict) -> (codes, scale, zero,
g_idx)`` in the shapes of ``refsim.rptq.gptq.GPTQResult``; gguf returns a ``BlockTensor``."""
