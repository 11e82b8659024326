"""Calibrate and quantize one OPT decoder block: wall time per stage, and GPTQ against round to nearest.

    python benchmarks/bench_rptq.py [--hidden 2048] [--heads 32] [--nsamples 128] [--seqlen 512]
                                    [--clusters 32] [--head-clusters 4] [--wbits 4]

One randomly initialised OPT layer (transformers OPTForCausalLM, 1 decoder layer, a few outlier
channels in the embeddings) of hidden size ``--hidden`` and FFN 4 x hidden. Stages, each timed
once with time.perf_counter:
    statistics    calibration forward passes with refsim.rptq.calibrate hooks: per-channel
                  min/max at R1..R5 and GPTQ Hessians of the four linear inputs
    clustering    k-means R1..R5 (scikit-learn, n_init=10)
    reorder       permuting the layer's arrays
    gptq          GPTQ of q, k, v, out_proj, fc1, fc2 (per output row x per input cluster)
    rtn           round to nearest of the same weights with the same groups (the baseline)
    quantization  the integer W4A4 block (activation quantization, integer GEMMs, epilogues) on one
                  calibration sequence
The printed ratio is GPTQ time / RTN time, both measured in this run.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hidden", type=int, default=2048)
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--nsamples", type=int, default=128)
    ap.add_argument("--seqlen", type=int, default=512)
    ap.add_argument("--clusters", type=int, default=32)
    ap.add_argument("--head-clusters", type=int, default=4)
    ap.add_argument("--wbits", type=int, default=4)
    ap.add_argument("--batch", type=int, default=8)
    a = ap.parse_args(argv)

    import torch
    from transformers import OPTConfig, OPTForCausalLM

    from refsim.rptq.block import LINEAR_IN, LINEARS, QuantizedOPTBlock, opt_block
    from refsim.rptq.calibrate import Calibration, layer_arrays
    from refsim.rptq.gptq import gptq_quantize, rtn_quantize
    from refsim.rptq.pipeline import HESSIAN_OF, find_reorders
    from refsim.rptq.reorder import permute_hessian, permute_layer, permute_stats, reorder_arrays

    torch.manual_seed(0)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    cfg = OPTConfig(vocab_size=2048, hidden_size=a.hidden, num_hidden_layers=1, ffn_dim=4 * a.hidden,
                    num_attention_heads=a.heads, max_position_embeddings=max(2048, a.seqlen),
                    word_embed_proj_dim=a.hidden)
    model = OPTForCausalLM(cfg).eval()
    with torch.no_grad():
        model.model.decoder.embed_tokens.weight[:, :8] *= 20
    ids = np.random.Generator(np.random.PCG64(0)).integers(0, cfg.vocab_size, (a.nsamples, a.seqlen))
    print(f"OPT block: hidden {a.hidden}, heads {a.heads}, ffn {4 * a.hidden}; calibration {a.nsamples} x "
          f"{a.seqlen} tokens; torch threads {torch.get_num_threads()}", flush=True)
    times = {}

    t0 = time.perf_counter()
    cal = Calibration(model, keep_inputs=1).run(ids, batch_size=a.batch)
    times["statistics"] = time.perf_counter() - t0
    stats, hess = cal.stats[0], cal.hessians[0]
    layer = layer_arrays(model.model.decoder.layers[0])

    t0 = time.perf_counter()
    reorders = find_reorders(stats, heads=a.heads, n_clusters=a.clusters, head_clusters=a.head_clusters)
    times["clustering"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    arrays = {**permute_layer(layer, reorders), **permute_stats(stats, reorders), **reorder_arrays(reorders)}
    times["reorder"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    for lin in LINEARS:
        r = reorders[LINEAR_IN[lin]]
        print(f"\rgptq: {lin}", end="", file=sys.stderr, flush=True)
        res = gptq_quantize(arrays[f"{lin}.weight"], permute_hessian(hess[HESSIAN_OF[lin]], r.perm), bits=a.wbits,
                            groups=r.ids_new)
        arrays[f"{lin}.codes"], arrays[f"{lin}.scale"], arrays[f"{lin}.zero"] = res.codes, res.scale, res.zero
    print(file=sys.stderr)
    times["gptq"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    for lin in LINEARS:
        rtn_quantize(arrays[f"{lin}.weight"], bits=a.wbits, groups=reorders[LINEAR_IN[lin]].ids_new)
    times["rtn"] = time.perf_counter() - t0

    block = QuantizedOPTBlock(arrays, {"hidden": a.hidden, "heads": a.heads, "ffn": 4 * a.hidden, "eps": 1e-5,
                                       "wbits": a.wbits, "layout": "physical"})
    x = cal.layer_inputs(0)[0]
    t0 = time.perf_counter()
    st = opt_block(block, x, config="W4A4")
    times["quantization"] = time.perf_counter() - t0
    ref = opt_block(block, x, config="W16A16")

    from refsim.metrics import sqnr_db

    for k, v in times.items():
        print(f"{k:>13s}: {v:9.2f} s")
    print(f"GPTQ / RTN (same weights, same per-row x per-cluster groups): {times['gptq'] / times['rtn']:.1f}x")
    print(f"W4A4 block output SQNR vs float on one sequence: {sqnr_db(ref['out'], st['out']):.2f} dB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
