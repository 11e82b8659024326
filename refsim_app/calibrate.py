"""``refsim calibrate``: calibrate, cluster, reorder and GPTQ-quantize a local OPT checkpoint.

    refsim calibrate MODEL_DIR --wbits 4 --abits 4 --kvbits 4 --clusters 32 --out DIR
                     [--calib FILE (.npy token ids, or text tokenized with the model's tokenizer)]

Writes DIR/model.safetensors + quant_config.json (refsim.rptq.model_io), report.md / report.json
(SQNR per stage; per-tensor vs per-cluster activation quantization) and ranges.png (per-channel
ranges before and after reordering). Light at import: torch and transformers load inside ``run``.

Numerics: ``--preset NAME`` / ``--spec FILE.json`` (default ``rptq``) name the activation spec of the
run's own configuration ("CLI", from --wbits/--abits/--kvbits, and its no-reorder baseline) and of the
per-point activation SQNR: the forward pass runs the RPTQ scheme with it (activation and probability
quantization, every product's accumulator). The named RPTQ / QRazor configurations of the report keep
their published presets, and the weights are GPTQ's (preset gptq). The spec is recorded in
quant_config.json and report.json; a field the pipeline cannot apply (the requantization rule, the SDR
rounding) is refused (:func:`refsim_cli.numerics.check_applied`, ``APPLIED``) rather than recorded and
ignored.

The orchestration lives here (the application layer); every step it runs is a library function of
``refsim.rptq`` (calibrate, pipeline, report, model_io).
"""

from __future__ import annotations

import os
import sys
import time

from refsim.progress import report_progress
from refsim_cli import (
    UsageError,
    check_output,
    format_size,
    int_range,
    missing_modules,
    positive_int,
    require_extra,
    seed_int,
)
from refsim_cli.numerics import add_spec_arguments, check_applied, spec_from_args, spec_source

#: the spec fields the calibrate pipeline applies (module docstring): the float32 epilogue and no SDR, the others
APPLIED = ("scale_op", "compute_dtype", "rounding", "zero_point_stage", "signed", "narrow", "saturation",
           "acc_bits", "acc_overflow", "nonfinite")
ACT_BITS_ALLOWED = "an integer in 2..8, or 16 (not quantized)"
HF_MODULES = ("torch", "transformers", "safetensors")
PLOT_NOTE = "matplotlib is not installed: ranges.png is not written (pip install matplotlib for the plot)"


def register(subparsers) -> None:
    p = subparsers.add_parser("calibrate", help="RPTQ calibration + GPTQ quantization of a local OPT model",
                              description=__doc__.split("\n\n")[0] + " Needs the [hf] extra; matplotlib for "
                              "the range plot (without it the plot is skipped, with a note).")
    p.add_argument("model_dir", metavar="MODEL_DIR", help="a local transformers OPT directory (save_pretrained)")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="output directory to create; an earlier calibrate output is replaced only with --overwrite, "
                   "any other directory is refused, and DIR may not be, contain or lie inside MODEL_DIR")
    p.add_argument("--wbits", type=int, default=4, help="weight bits, 2..8 (GPTQ, asymmetric)")
    p.add_argument("--abits", type=int, default=4, help=f"activation bits: {ACT_BITS_ALLOWED}")
    p.add_argument("--kvbits", type=int, default=4, help=f"K/V bits: {ACT_BITS_ALLOWED}")
    p.add_argument("--clusters", type=positive_int, default=32,
                   help="clusters for R1, R4, R5: 1..the model's hidden size (default 32)")
    p.add_argument("--head-clusters", type=positive_int, default=4,
                   help="clusters per head for R2, R3: 1..the head size (default 4)")
    p.add_argument("--calib", metavar="FILE", help=".npy integer token ids (n, seqlen) or 1-d, or a UTF-8 text file "
                   "tokenized with MODEL_DIR's tokenizer (default: seeded random tokens, said plainly in the report)")
    p.add_argument("--nsamples", type=int_range(1, 1 << 20), default=16, help="calibration sequences (default 16)")
    p.add_argument("--seqlen", type=int_range(1, 1 << 20), default=128,
                   help="tokens per calibration sequence, 1..the model's positions (default 128)")
    p.add_argument("--seed", type=seed_int, default=0, help="seed of k-means and of random calibration tokens")
    p.add_argument("--act-order", action="store_true", help="GPTQ act-order (with static per-cluster groups)")
    p.add_argument("--report-seqs", type=positive_int, default=1,
                   help="held calibration sequences the report runs, 1..--nsamples (default 1)")
    p.add_argument("--plot-layer", type=int_range(0), default=None,
                   help="layer of the range plot, 0..layers-1 (default: the middle layer)")
    p.add_argument("--overwrite", action="store_true", help="replace DIR when it is an earlier calibrate output")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    add_spec_arguments(p, default="rptq")
    p.set_defaults(func=run)


def _check_int(name, value, lo, hi, extra=()):
    if value in extra:
        return
    if not lo <= value <= hi:
        allowed = f"{lo}..{hi}" + (f" or {', '.join(map(str, extra))}" if extra else "")
        raise UsageError(f"--{name}={value} is not allowed; allowed: {allowed}")


def _estimate_output_bytes(model_dir) -> int:
    """The output holds the float weights again plus int codes and scales: at most about 1.5x the
    checkpoint's weights (float32 checkpoints; fp16 ones give less), and reports of a few MiB."""
    from refsim.rptq.calibrate import weight_files

    return int(1.5 * sum(os.path.getsize(f) for f in weight_files(model_dir))) + (4 << 20)


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
        raise UsageError(f"--calib {args.calib!r} is not a file")
    if args.calib.endswith(".npy"):
        with open(args.calib, "rb") as f:
            if f.read(6) != b"\x93NUMPY":
                raise UsageError(f"--calib {args.calib!r} is not a .npy file (no NUMPY header); give token ids "
                                 "saved with numpy.save, or a UTF-8 text file without the .npy suffix")
        try:
            arr = np.load(args.calib, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise UsageError(f"--calib {args.calib!r} is not a readable .npy file ({exc})") from None
        if not isinstance(arr, np.ndarray):
            raise UsageError(f"--calib {args.calib!r} must hold one array of token ids, not an archive")
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
        try:
            with open(args.calib, encoding="utf-8") as f:
                text = f.read()
        except UnicodeDecodeError as exc:
            raise UsageError(f"--calib {args.calib!r} is neither a .npy file nor UTF-8 text ({exc.reason} at byte "
                             f"{exc.start})") from None
        stream = np.asarray(tok(text)["input_ids"], dtype=np.int64)
        ids = stream[: (stream.size // t) * t].reshape(-1, t)[:n]
        source = f"text from {args.calib} tokenized with the model's tokenizer, cut into {t}-token sequences"
    if ids.size == 0 or ids.shape[0] == 0:
        raise ValueError(f"--calib {args.calib!r} gives an empty calibration set (fewer than --seqlen={t} tokens?)")
    if ids.min() < 0 or ids.max() >= vocab:
        raise ValueError(f"--calib token ids must lie in 0..{vocab - 1} (the model's vocabulary)")
    return ids.astype(np.int64), f"Calibration data: {ids.shape[0]} sequences of {ids.shape[1]} tokens, {source}."


def run(args) -> int:
    spec = check_applied(spec_from_args(args), command="refsim calibrate", base="rptq", applied=APPLIED)
    # checked here rather than by argparse types so that a bad value is a returned status 2 like
    # the checks that need the model's config
    _check_int("wbits", args.wbits, 2, 8)
    _check_int("abits", args.abits, 2, 8, extra=(16,))
    _check_int("kvbits", args.kvbits, 2, 8, extra=(16,))
    _check_int("report-seqs", args.report_seqs, 1, args.nsamples)
    require_extra("hf", *HF_MODULES, what="refsim calibrate")
    plot = not missing_modules("matplotlib")
    if not plot:
        print(f"note: {PLOT_NOTE}", file=sys.stderr)

    from refsim.rptq.calibrate import check_model_dir  # torch loads here

    inputs = {"MODEL_DIR": args.model_dir, "--calib": args.calib}
    check_output(args.out, kinds=("calibrate",), replace=args.overwrite, replace_flag="--overwrite", inputs=inputs)
    cfg = check_model_dir(args.model_dir)
    out = str(check_output(args.out, kinds=("calibrate",), replace=args.overwrite, replace_flag="--overwrite",
                           inputs=inputs, estimate_bytes=_estimate_output_bytes(args.model_dir)))
    hidden, heads, ffn = cfg.hidden_size, cfg.num_attention_heads, cfg.ffn_dim
    if args.clusters > min(hidden, ffn):
        raise UsageError(f"--clusters={args.clusters} is more than the {min(hidden, ffn)} channels of R1/R4/R5; "
                         f"allowed: 1..{min(hidden, ffn)}")
    if args.head_clusters > hidden // heads:
        raise UsageError(f"--head-clusters={args.head_clusters} is more than the {hidden // heads} channels of a "
                         f"head; allowed: 1..{hidden // heads}")
    if args.seqlen > cfg.max_position_embeddings:
        raise UsageError(f"--seqlen={args.seqlen} exceeds the model's {cfg.max_position_embeddings} positions; "
                         f"allowed: 1..{cfg.max_position_embeddings}")
    n_layers = cfg.num_hidden_layers
    plot_layer = n_layers // 2 if args.plot_layer is None else args.plot_layer
    _check_int("plot-layer", plot_layer, 0, n_layers - 1)
    ids, calib_note = calibration_tokens(args, cfg)
    progress = not args.quiet
    import numpy as np

    from refsim.rptq import report
    from refsim.rptq.block import CONFIGS, SDR_CONFIGS
    from refsim.rptq.calibrate import Calibration, layer_arrays, load_opt
    from refsim.rptq.model_io import save_quantized, write_json
    from refsim.rptq.pipeline import build_block, model_layer_blocks
    from refsim.schemes import scheme

    if not progress:
        import transformers

        transformers.utils.logging.disable_progress_bar()  # --quiet: no "Loading weights" bar either
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
    cli_scheme = scheme(configs["CLI"], spec=spec)  # the run's own configuration under the given spec
    runs = {**configs, "CLI": cli_scheme}
    t1 = time.perf_counter()
    layers = []
    for i, block in enumerate(blocks):
        if progress:
            report_progress("report: layer", i + 1, len(blocks))
        xs = list(cal.layer_inputs(i))
        stages = report.stage_sqnr(block, xs, runs)
        # the same configuration without reordering: one range per tensor (per head for R2/R3),
        # weights GPTQ'd per output row
        layer = model.model.decoder.layers[i]
        base = build_block(layer_arrays(layer), cal.stats[i], cal.hessians[i], heads=heads,
                           eps=float(layer.self_attn_layer_norm.eps), wbits=args.wbits, reorder=False,
                           act_order=args.act_order)
        stages.update(report.stage_sqnr(base, xs, {"CLI per-tensor (no reorder)": cli_scheme}))
        layers.append({"activations": report.activation_sqnr(block, xs, abits=abits, kvbits=kvbits, spec=spec),
                       "stages": stages, "acc_bits": report.acc_bits(block, xs, cli_scheme)})
    timings["report"] = time.perf_counter() - t1
    stats = cal.stats[plot_layer]
    b = blocks[plot_layer]
    panels = [(f"layer {plot_layer} {p} ({r})", *stats[p], b[f"{r}.perm"], b[f"{r}.sizes"])
              for p, r in (("ln1", "R1"), ("ln2", "R4"), ("fc2_in", "R5"))]
    md = report.markdown_report(layers, calib_note=calib_note, configs=list(configs), abits=abits, kvbits=kvbits)
    import refsim

    numerics = {"activations": spec.to_dict(), "activations_source": spec_source(args),
                "weights": refsim.preset("gptq").to_dict(), "weights_source": "preset gptq"}
    info = {"numerics": numerics, "model_dir": os.path.abspath(args.model_dir), "model_type": cfg.model_type,
            "hidden": hidden,
            "heads": heads, "ffn": ffn, "calibration": {"note": calib_note, "shape": list(ids.shape),
                                                        "seed": args.seed},
            "args": {k: v for k, v in vars(args).items() if k != "func"}, "timings_s": timings}

    def extra(tmp):
        write_json(os.path.join(tmp, "report.json"), {"calibration": calib_note, "numerics": numerics,
                                                      "configs": configs, "layers": layers, "timings_s": timings})
        with open(os.path.join(tmp, "report.md"), "w") as f:
            f.write(md)
        if plot:
            report.plot_ranges(panels, os.path.join(tmp, "ranges.png"),
                               title="Per-channel ranges before / after RPTQ reordering (red: cluster boundaries)")

    save_quantized(out, blocks, info=info, write_extra=extra, overwrite=args.overwrite, inputs=inputs)
    first = layers[plot_layer]["activations"]
    print(calib_note)
    print(f"layer {plot_layer}: activation SQNR dB per-tensor -> per-cluster: " +
          ", ".join(f"{p} {r['per_tensor']:.1f} -> {r['per_cluster']:.1f}" for p, r in first.items()))
    cli = np.mean([lay["stages"]["CLI"]["out"] for lay in layers])
    flat = np.mean([lay["stages"]["CLI per-tensor (no reorder)"]["out"] for lay in layers])
    print(f"block output SQNR (W{args.wbits}A{args.abits}KV{args.kvbits}), mean over layers: reordered per-cluster "
          f"{cli:.2f} dB, per-tensor without reordering {flat:.2f} dB")
    written = "model.safetensors, quant_config.json, report.md, report.json" + (", ranges.png" if plot else "")
    print(f"wrote {out} ({written}; {format_size(_dir_bytes(out))})" + ("" if plot else f"; {PLOT_NOTE}"))
    return 0


def _dir_bytes(path) -> int:
    return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(path) for f in fs)
