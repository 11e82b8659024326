"""How far refsim's machine-independent LLaMA float steps lie from transformers' float32 modules.

    python benchmarks/floatops_vs_transformers.py

Not a speed benchmark: it prints, for the inputs of tests/test_floatops_llama.py (which assert the
bounds), the largest distance and the share of bit-identical elements for RMSNorm (64 x 576 rows,
channel scales 0.1..30), RoPE inv_freq and the 2048 x 64 cos/sin table (dim 64, theta 1e5), and
SiLU (40 000 inputs). Recorded in docs/numerics.md ("LLaMA-family float steps").
"""

from __future__ import annotations

import numpy as np
import torch
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import LlamaRMSNorm, LlamaRotaryEmbedding

from refsim import floatops as F
from refsim.metrics import ulp_distance_float32 as ulps


def main() -> int:
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((64, 576)) * rng.uniform(0.1, 30, 576)).astype(np.float32)
    w = rng.uniform(-2, 2, 576).astype(np.float32)
    norm = LlamaRMSNorm(576, eps=1e-5)
    with torch.no_grad():
        norm.weight.copy_(torch.from_numpy(w))
        ref = norm(torch.from_numpy(x)).numpy()
    d = ulps(F.rms_norm(x, w, eps=1e-5), ref)
    print(f"rms_norm:      max {d.max()} ulp, {np.mean(d == 0):.1%} equal")
    cfg = LlamaConfig(hidden_size=576, num_attention_heads=9, num_key_value_heads=3, head_dim=64, rope_theta=1e5)
    rot = LlamaRotaryEmbedding(cfg)
    print(f"rope_inv_freq: max {ulps(F.rope_inv_freq(64, 1e5), rot.inv_freq.numpy()).max()} ulp")
    with torch.no_grad():
        rc, rs = (t[0].numpy() for t in rot(torch.zeros(1, 2048, 64), torch.arange(2048)[None]))
    c, s = F.rope_cos_sin(np.arange(2048), rot.inv_freq.numpy())
    for name, ours, theirs in (("cos", c, rc), ("sin", s, rs)):
        print(f"rope {name}:      max {np.abs(ours - theirs).max():.3g} absolute, {np.mean(ours == theirs):.1%} equal")
    x = np.concatenate([rng.standard_normal(20000) * 8, rng.uniform(-87, 87, 20000)]).astype(np.float32)
    d = ulps(F.silu(x), torch.nn.functional.silu(torch.from_numpy(x)).numpy())
    print(f"silu:          max {d.max()} ulp, {np.mean(d == 0):.1%} equal")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
