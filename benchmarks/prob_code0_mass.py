"""How much attention probability RPTQ's 8-bit probability codes drop, by query position (docs/eval.md).

    REFSIM_DATA=... python benchmarks/prob_code0_mass.py [--tokens 2048] [--layers 4]

RPTQ's probabilities are unsigned 8-bit codes with the fixed step s = fp16(1/255) (``refsim.schemes.
PROB_SCALE``): a probability below s/2 becomes code 0 and leaves the P·V product. A query at position t
spreads its attention over t + 1 keys, so the share of its mass that falls below s/2 grows with t. This
runs SmolLM2-135M's first ``--layers`` layers in float (W16A16, refsim's forward) on the first ``--tokens``
tokens of Persuasion and prints, per layer and range of query positions, the mean of

    lost[h, t] = sum over keys j of p[h, t, j] where code(p[h, t, j]) == 0

with the codes of W4A4's own probability quantizer (``refsim.qtensor.fixed_quantize`` under the scheme's
spec, as ``RPTQScheme.probs`` calls it). Not a timing: a measurement the eval tables cite.
"""

from __future__ import annotations

import argparse

import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=2048)
    ap.add_argument("--layers", type=int, default=4)
    a = ap.parse_args(argv)
    from transformers import AutoTokenizer

    from refsim.corpus import austen_novel
    from refsim.formats.gguf import smollm2_gguf
    from refsim.models.forward import forward
    from refsim.qtensor import fixed_quantize
    from refsim.rptq.calibrate import float_model, load_causal_lm
    from refsim.schemes import PROB_SCALE, scheme

    path = smollm2_gguf()
    hf, _, _ = load_causal_lm(str(path))
    hf.model.layers = hf.model.layers[: a.layers]
    hf.config.num_hidden_layers = a.layers
    base = float_model(hf)
    tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    text = austen_novel("persuasion")
    ids = np.asarray(tok(text[: 16 * a.tokens], add_special_tokens=False)["input_ids"][: a.tokens])
    x = base.embed(ids)
    w4a4, bits = scheme("W4A4"), base.topology.prob_bits
    edges = [e for e in (0, 256, 1024, a.tokens) if e <= a.tokens]
    print(f"{path.name}, the first {ids.size} tokens of Persuasion; s = {float(PROB_SCALE):.8f}")
    for i, block in enumerate(base.blocks):
        st = forward(base.topology, block, x, scheme("W16A16"), record_sums=False)
        p = st["probs"]
        codes = fixed_quantize(p, PROB_SCALE, 0, bits=bits, signed=False, spec=w4a4.spec).codes
        lost = np.where(codes == 0, p, 0).sum(axis=-1)  # (heads, T)
        spans = zip(edges[:-1], edges[1:], strict=True)
        parts = [f"rows {lo}-{hi - 1}: {lost[:, lo:hi].mean():.3f}" for lo, hi in spans]
        print(f"layer {i}: mean probability mass on code 0, " + "; ".join(parts))
        x = st["out"]
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
