"""``refsim calibrate``: calibrate, cluster, reorder and GPTQ-quantize a local OPT checkpoint.

    refsim calibrate MODEL_DIR --wbits 4 --abits 4 --kvbits 4 --clusters 32 --out DIR
                     [--calib FILE (.npy token ids, or text tokenized with the model's tokenizer)]

Writes DIR/model.safetensors + quant_config.json (refsim.rptq.model_io), report.md / report.json
(SQNR per stage; per-tensor vs per-cluster activation quantization) and ranges.png (per-channel
ranges before and after reordering). Light at import: torch and transformers load inside ``run``.
"""

from __future__ import annotations

import os
import time

from refsim.progress import report_progress

ACT_BITS_ALLOWED = "an integer in 2..8, or 16 (not quantized)"


def register(subparsers) -> None:
    p = subparsers.add_parser("calibrate", help="RPTQ calibration + GPTQ quantization of a local OPT model",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("model_dir", metavar="MODEL_DIR", help="a local transformers OPT directory (save_pretrained)")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (must not exist)")
    p.add_argument("--wbits", type=int, default=4, help="weight bits, 2..8 (GPTQ, asymmetric)")
    p.add_argument("--abits", type=int, default=4, help=f"activation bits: {ACT_BITS_ALLOWED}")
    p.add_argument("--kvbits", type=int, default=4, help=f"K/V bits: {ACT_BITS_ALLOWED}")
    p.add_argument("--clusters", type=int, default=32, help="clusters for R1, R4, R5 (default 32)")
    p.add_argument("--head-clusters", type=int, default=4, help="clusters per head for R2, R3 (default 4)")
    p.add_argument("--calib", metavar="FILE", help=".npy token ids (n, seqlen) or 1-d, or a UTF-8 text file")
    p.add_argument("--nsamples", type=int, default=16, help="calibration sequences (default 16)")
    p.add_argument("--seqlen", type=int, default=128, help="tokens per calibration sequence (default 128)")
    p.add_argument("--seed", type=int, default=0, help="seed of k-means and of random calibration tokens")
    p.add_argument("--act-order", action="store_true", help="GPTQ act-order (with static per-cluster groups)")
    p.add_argument("--report-seqs", type=int, default=1, help="held calibration sequences the report runs")
    p.add_argument("--plot-layer", type=int, default=None, help="layer of the range plot (default: middle)")
    p.add_argument("--overwrite", action="store_true", help="replace DIR if it exists")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(func=run)


def _check_int(name, value, lo, hi, extra=()):
    if value in extra:
        return
    if not lo <= value <= hi:
        allowed = f"{lo}..{hi}" + (f" or {', '.join(map(str, extra))}" if extra else "")
        raise ValueError(f"--{name}={value} is not allowed; allowed: {allowed}")


def calibration_tokens(args, model_cfg):
    """(token ids (n, seqlen) int64, a sentence saying where they came from)."""
    import numpy as np

    n, t = args.nsamples, args.seqlen
    vocab = model_cfg.vocab_size
    if args.calib is None:
        rng = np.random.Generator(np.random.PCG64(args.seed))
        ids = rng.integers(0, vocab, (n, t))
        return ids, (f"Calibration data: NO calibration file was given; {n} sequences of {t} seeded random token ids "
                     f"(numpy PCG64, seed {args.seed}, uniform over the {vocab}-token vocabulary). Ranges and errors "
                     "below are those of random tokens, not of real text.")
    if not os.path.isfile(args.calib):
        raise FileNotFoundError(f"--calib {args.calib!r} is not a file")
    if args.calib.endswith(".npy"):
        arr = np.load(args.calib, allow_pickle=False)
        if arr.dtype.kind not in "iu":
            raise ValueError(f"--calib {args.calib!r} must hold integer token ids, got dtype {arr.dtype}")
        if arr.ndim == 2:
            ids = arr[:n, :t]
        elif arr.ndim == 1:
            ids = arr[: (arr.size // t) * t].reshape(-1, t)[:n]
        else:
            raise ValueError(f"--calib {args.calib!r} must be 1-d or 2-d (sequences, tokens), got shape {arr.shape}")
        source = f"token ids from {args.calib}"
    else:
        from transformers import AutoTokenizer

        # transformers 5 builds an empty tokenizer for a directory without tokenizer files, which
        # would silently tokenize any text to nothing: require the files.
        tok_files = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")
        if not any(os.path.isfile(os.path.join(args.model_dir, f)) for f in tok_files):
            raise ValueError(f"--calib {args.calib!r} is text, but MODEL_DIR has no usable tokenizer (none of "
                             f"{', '.join(tok_files)}); give token ids in a .npy file instead")
        try:
            tok = AutoTokenizer.from_pretrained(args.model_dir)
        except (OSError, ValueError) as exc:
            raise ValueError(f"--calib {args.calib!r} is text, but MODEL_DIR has no usable tokenizer ({exc}); "
                             "give token ids in a .npy file instead") from None
        with open(args.calib, encoding="utf-8") as f:
            text = f.read()
        stream = np.asarray(tok(text)["input_ids"], dtype=np.int64)
        ids = stream[: (stream.size // t) * t].reshape(-1, t)[:n]
        source = f"text from {args.calib} tokenized with the model's tokenizer, cut into {t}-token sequences"
    if ids.size == 0 or ids.shape[0] == 0:
        raise ValueError(f"--calib {args.calib!r} gives an empty calibration set (fewer than --seqlen={t} tokens?)")
    if ids.min() < 0 or ids.max() >= vocab:
        raise ValueError(f"--calib token ids must lie in 0..{vocab - 1} (the model's vocabulary)")
    return ids.astype(np.int64), f"Calibration data: {ids.shape[0]} sequences of {ids.shape[1]} tokens, {source}."


def run(args) -> int:
    _check_int("wbits", args.wbits, 2, 8)
    _check_int("abits", args.abits, 2, 8, extra=(16,))
    _check_int("kvbits", args.kvbits, 2, 8, extra=(16,))
    _check_int("nsamples", args.nsamples, 1, 1 << 20)
    _check_int("seqlen", args.seqlen, 1, 1 << 20)
    _check_int("clusters", args.clusters, 1, 1 << 20)
    _check_int("head-clusters", args.head_clusters, 1, 1 << 20)
    _check_int("report-seqs", args.report_seqs, 1, args.nsamples)
    out = os.path.abspath(args.out)
    if os.path.exists(out) and not args.overwrite:
        raise FileExistsError(f"--out {args.out!r} exists; choose a new directory or pass --overwrite")

    from refsim.rptq.calibrate import check_model_dir

    check_model_dir(args.model_dir)
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(args.model_dir)
    hidden, heads, ffn = cfg.hidden_size, cfg.num_attention_heads, cfg.ffn_dim
    if args.clusters > min(hidden, ffn):
        raise ValueError(f"--clusters={args.clusters} is more than the {min(hidden, ffn)} channels of R1/R4/R5; "
                         f"allowed: 1..{min(hidden, ffn)}")
    if args.head_clusters > hidden // heads:
        raise ValueError(f"--head-clusters={args.head_clusters} is more than the {hidden // heads} channels of a "
                         f"head; allowed: 1..{hidden // heads}")
    if args.seqlen > cfg.max_position_embeddings:
        raise ValueError(f"--seqlen={args.seqlen} exceeds the model's {cfg.max_position_embeddings} positions")
    ids, calib_note = calibration_tokens(args, cfg)
    progress = not args.quiet
    import numpy as np

    from refsim.rptq import report
    from refsim.rptq.block import CONFIGS, SDR_CONFIGS
    from refsim.rptq.calibrate import Calibration, layer_arrays, load_opt
    from refsim.rptq.model_io import save_quantized, write_json
    from refsim.rptq.pipeline import build_block, model_layer_blocks

    t0 = time.perf_counter()
    model = load_opt(args.model_dir)
    cal = Calibration(model, keep_inputs=args.report_seqs).run(ids, progress=progress)
    timings = {"statistics": time.perf_counter() - t0}
    blocks = model_layer_blocks(model, cal, wbits=args.wbits, n_clusters=args.clusters,
                                head_clusters=args.head_clusters, seed=args.seed, act_order=args.act_order,
                                progress=progress, timings=timings)
    abits = None if args.abits == 16 else args.abits
    kvbits = None if args.kvbits == 16 else args.kvbits
    configs = {"CLI": {"wbits": args.wbits, "abits": abits, "kvbits": kvbits}}
    configs.update({c: c for c, b in CONFIGS.items() if b[0] == args.wbits})
    configs.update({c: c for c in SDR_CONFIGS if c != "QRAZOR"})  # "QRAZOR" is an alias of QRAZOR_W4A4
    t1 = time.perf_counter()
    layers = []
    for i, block in enumerate(blocks):
        if progress:
            report_progress("report: layer", i + 1, len(blocks))
        xs = list(cal.layer_inputs(i))
        stages = report.stage_sqnr(block, xs, configs)
        # the same configuration without reordering: one range per tensor (per head for R2/R3),
        # weights GPTQ'd per output row
        layer = model.model.decoder.layers[i]
        base = build_block(layer_arrays(layer), cal.stats[i], cal.hessians[i], heads=heads,
                           eps=float(layer.self_attn_layer_norm.eps), wbits=args.wbits, reorder=False,
                           act_order=args.act_order)
        stages.update(report.stage_sqnr(base, xs, {"CLI per-tensor (no reorder)": configs["CLI"]}))
        layers.append({"activations": report.activation_sqnr(block, xs, abits=abits, kvbits=kvbits),
                       "stages": stages, "acc_bits": report.acc_bits(block, xs, configs["CLI"])})
    timings["report"] = time.perf_counter() - t1
    plot_layer = len(blocks) // 2 if args.plot_layer is None else args.plot_layer
    _check_int("plot-layer", plot_layer, 0, len(blocks) - 1)
    stats = cal.stats[plot_layer]
    b = blocks[plot_layer]
    panels = [(f"layer {plot_layer} {p} ({r})", *stats[p], b[f"{r}.perm"], b[f"{r}.sizes"])
              for p, r in (("ln1", "R1"), ("ln2", "R4"), ("fc2_in", "R5"))]
    md = report.markdown_report(layers, calib_note=calib_note, configs=list(configs), abits=abits, kvbits=kvbits)
    info = {"model_dir": os.path.abspath(args.model_dir), "model_type": cfg.model_type, "hidden": hidden,
            "heads": heads, "ffn": ffn, "calibration": {"note": calib_note, "shape": list(ids.shape),
                                                        "seed": args.seed},
            "args": {k: v for k, v in vars(args).items() if k != "func"}, "timings_s": timings}

    def extra(tmp):
        write_json(os.path.join(tmp, "report.json"), {"calibration": calib_note, "configs": configs,
                                                      "layers": layers, "timings_s": timings})
        with open(os.path.join(tmp, "report.md"), "w") as f:
            f.write(md)
        report.plot_ranges(panels, os.path.join(tmp, "ranges.png"),
                           title="Per-channel ranges before / after RPTQ reordering (red: cluster boundaries)")

    save_quantized(out, blocks, info=info, write_extra=extra, overwrite=args.overwrite)
    first = layers[plot_layer]["activations"]
    print(calib_note)
    print(f"layer {plot_layer}: activation SQNR dB per-tensor -> per-cluster: " +
          ", ".join(f"{p} {r['per_tensor']:.1f} -> {r['per_cluster']:.1f}" for p, r in first.items()))
    cli = np.mean([lay["stages"]["CLI"]["out"] for lay in layers])
    flat = np.mean([lay["stages"]["CLI per-tensor (no reorder)"]["out"] for lay in layers])
    print(f"block output SQNR (W{args.wbits}A{args.abits}KV{args.kvbits}), mean over layers: reordered per-cluster "
          f"{cli:.2f} dB, per-tensor without reordering {flat:.2f} dB")
    print(f"wrote {out} (model.safetensors, quant_config.json, report.md, report.json, ranges.png)")
    return 0
