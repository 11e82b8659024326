"""``refsim eval``: the perplexity of a whole model under each configuration, in refsim's integer dataflow.

    refsim eval MODEL --configs W16A16,W4A16,W4A8,W4A4,W4A4KV,W4A3KV,W3A3KV,...
                (--text FILE | --token-ids FILE.npy) [--calib-text FILE | --calib-token-ids FILE.npy]
                [--seqlen 2048] [--max-tokens N] [--clusters K] [--json] [--out DIR] [--scheduler ADDRESS]

MODEL is a transformers directory (save_pretrained) or a ``.gguf`` file (transformers dequantizes it to
float32). Each configuration is calibrated on the calibration tokens (RPTQ style, layer by layer:
per-channel min/max, k-means reorders, GPTQ weights; ``@rtn`` for round-to-nearest) and evaluated in
non-overlapping windows of the evaluation tokens (``refsim.eval``: window rule, reduction order).
Configurations: RPTQ's names (refsim.schemes.CONFIGS), QRazor's (SDR_CONFIGS), each with options
``@cN`` (clusters; ``@c1`` is the per-tensor baseline without reordering), ``@hN`` (clusters per head),
``@rtn``, ``@gN`` (QRazor group size); and, for a .gguf MODEL, the native-weights names
(refsim.schemes.NATIVE_CONFIGS: the file's own weight blocks as exact codes, docs/gguf.md). Progress
goes to stderr; results are cached per configuration and window in ``--out DIR`` (a run with the same
DIR resumes). Configurations and windows are Dask tasks on a local cluster by default (``--scheduler
ADDRESS`` for a running one, ``--scheduler inline`` for none): the results are the same bits either way.

Numerics: ``--preset`` / ``--spec`` (default: each method's preset) give the spec of the RPTQ
configurations (activations, probabilities, every product's accumulator); QRazor configurations keep
the ``qrazor`` preset and weights GPTQ's (``gptq``).
"""

from __future__ import annotations

import os
import sys

from refsim_cli import UsageError, check_output, int_range, positive_int, require_extra, seed_int, to_json
from refsim_cli.numerics import add_spec_arguments, spec_source

DEFAULT_CONFIGS = "W16A16,W4A16,W4A8,W4A4,W4A4KV,W4A3KV,W3A3KV"
HF_MODULES = ("torch", "transformers", "safetensors")
SCHEDULERS = ("local", "inline", "ADDRESS (tcp://host:port)")
GGUF_NOTE = ("MODEL is a GGUF file: its W16A16 (\"float\") weights are the file's block-quantized weights "
             "({types}) dequantized to float32 by transformers, not the original float weights")


def register(subparsers) -> None:
    p = subparsers.add_parser("eval", help="perplexity of a whole model per RPTQ / QRazor / GPTQ configuration",
                              description=__doc__.split("\n\n")[0] + " Needs the [hf] extra, and dask[distributed] "
                              "(the [eval] extra) unless --scheduler inline.")
    p.add_argument("model", metavar="MODEL", help="a transformers model directory or a .gguf file")
    p.add_argument("--configs", default=DEFAULT_CONFIGS,
                   help=f"comma-separated configurations (default {DEFAULT_CONFIGS}); options @cN @hN @rtn @gN")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--text", metavar="FILE", help="UTF-8 evaluation text, tokenized with MODEL's tokenizer")
    src.add_argument("--token-ids", metavar="FILE.npy", help="evaluation token ids (.npy, integers; flattened)")
    cal = p.add_mutually_exclusive_group()
    cal.add_argument("--calib-text", metavar="FILE", help="UTF-8 calibration text (default: seeded random tokens, "
                     "said plainly in every result)")
    cal.add_argument("--calib-token-ids", metavar="FILE.npy", help="calibration token ids (.npy; 2-d (n, t) or 1-d)")
    p.add_argument("--nsamples", type=int_range(1, 1 << 16), default=8, help="calibration sequences (default 8)")
    p.add_argument("--calib-seqlen", type=int_range(2, 1 << 20), default=None,
                   help="tokens per calibration sequence (default: --seqlen)")
    p.add_argument("--calib-inputs", choices=("quantized", "float"), default="quantized",
                   help="calibrate layer i on the quantized outputs of layers < i (RPTQ, default) or on the float "
                   "model's")
    p.add_argument("--seqlen", type=int_range(2, 1 << 20), default=2048, help="window length (default 2048)")
    p.add_argument("--max-tokens", type=positive_int, default=None, help="evaluate the first N // seqlen windows")
    p.add_argument("--clusters", type=positive_int, default=32, help="clusters of R1/R4/R5 (default 32)")
    p.add_argument("--head-clusters", type=positive_int, default=4, help="clusters per head of R2/R3 (default 4)")
    p.add_argument("--group-size", type=positive_int, default=16, help="QRazor SDR group size (default 16)")
    p.add_argument("--head-dtype", choices=("float32", "float16"), default="float32",
                   help="precision of the embedding and lm_head (kept float, as the papers keep them)")
    p.add_argument("--sqnr-tokens", type=int_range(2, 1 << 20), default=256,
                   help="tokens of the first calibration sequence the per-stage SQNR runs on (default 256)")
    p.add_argument("--seed", type=seed_int, default=0, help="seed of k-means and of random calibration tokens")
    p.add_argument("--out", metavar="DIR", default=None,
                   help="result cache: created, or resumed when it is an earlier refsim eval cache (never any "
                   "other directory)")
    p.add_argument("--scheduler", default="local", metavar="ADDRESS",
                   help="'local' (a local Dask cluster, default), 'inline' (no Dask) or a scheduler address")
    p.add_argument("--workers", type=int_range(1, 256), default=2, help="workers of the local cluster (default 2)")
    p.add_argument("--json", action="store_true", help='print {"results": [...]} as JSON')
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    add_spec_arguments(p, default=None)
    p.set_defaults(func=run)


def _read_ids(path, flag, vocab):
    import numpy as np

    if not os.path.isfile(path):
        raise UsageError(f"{flag} {path!r} is not a file")
    with open(path, "rb") as f:
        if f.read(6) != b"\x93NUMPY":
            raise UsageError(f"{flag} {path!r} is not a .npy file (no NUMPY header)")
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise UsageError(f"{flag} {path!r} is not a readable .npy file ({exc})") from None
    if arr.dtype.kind not in "iu" or arr.ndim not in (1, 2) or arr.size == 0:
        raise UsageError(f"{flag} {path!r} must hold a non-empty 1-d or 2-d integer array, got {arr.dtype} {arr.shape}")
    if arr.min() < 0 or arr.max() >= vocab:
        raise UsageError(f"{flag} {path!r}: token ids must lie in 0..{vocab - 1} (the model's vocabulary)")
    return arr.astype(np.int64)


def _tokenize(args, path, flag):
    import numpy as np
    from transformers import AutoTokenizer

    if not os.path.isfile(path):
        raise UsageError(f"{flag} {path!r} is not a file")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError as exc:
        raise UsageError(f"{flag} {path!r} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    if args.model.endswith(".gguf"):
        d, kw = os.path.dirname(os.path.abspath(args.model)), {"gguf_file": os.path.basename(args.model)}
    else:
        d, kw = args.model, {}
        tok_files = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")
        if not any(os.path.isfile(os.path.join(d, f)) for f in tok_files):
            raise UsageError(f"{flag} {path!r} is text, but MODEL has no tokenizer (none of {', '.join(tok_files)}); "
                             "give token ids in a .npy file instead")
    tok = AutoTokenizer.from_pretrained(d, **kw)
    return np.asarray(tok(text, add_special_tokens=False)["input_ids"], dtype=np.int64)


def _calibration(args, vocab, t):
    """((n, t) token ids, a sentence saying where they came from)."""
    import numpy as np

    n = args.nsamples
    if args.calib_text is None and args.calib_token_ids is None:
        ids = np.random.Generator(np.random.PCG64(args.seed)).integers(0, vocab, (n, t))
        return ids, (f"NO calibration text was given: {n} sequences of {t} seeded random token ids (PCG64 seed "
                     f"{args.seed}); ranges and weights are calibrated on random tokens, not on real text")
    if args.calib_text is not None:
        stream, src = _tokenize(args, args.calib_text, "--calib-text"), f"text {args.calib_text}"
    else:
        arr = _read_ids(args.calib_token_ids, "--calib-token-ids", vocab)
        src = f"token ids {args.calib_token_ids}"
        if arr.ndim == 2:
            ids = arr[:n, :t]
            return ids, f"{ids.shape[0]} sequences of {ids.shape[1]} tokens from {src}"
        stream = arr
    ids = stream[: (stream.size // t) * t].reshape(-1, t)[:n]
    if ids.shape[0] == 0:
        raise UsageError(f"the calibration {src} has {stream.size} tokens: fewer than one sequence of {t}")
    return ids, f"{ids.shape[0]} sequences of {t} tokens from {src} (cut from its start)"


def _client(args):
    if args.scheduler == "inline":
        return None, None
    from distributed import Client, LocalCluster

    if args.scheduler == "local":
        cluster = LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address=None,
                               memory_limit=0)
        return Client(cluster), cluster
    try:
        return Client(args.scheduler, timeout=30), None
    except (OSError, ValueError, TimeoutError) as exc:
        raise UsageError(f"--scheduler {args.scheduler!r}: no Dask scheduler reachable there ({exc}); allowed: "
                         f"{', '.join(SCHEDULERS)}") from None


def _model_info(path):
    """A fingerprint of MODEL's files (the cache key) and, for a GGUF file, its weight types."""
    files = [path] if os.path.isfile(path) else sorted(os.path.join(path, f) for f in os.listdir(path))
    fp = [(os.path.basename(f), os.path.getsize(f), os.stat(f).st_mtime_ns) for f in files if os.path.isfile(f)]
    info = {"model": os.path.abspath(path), "files": fp}
    if path.endswith(".gguf"):
        from gguf import GGUFReader

        types = sorted({t.tensor_type.name for t in GGUFReader(path).tensors})
        info["gguf_types"] = types
    return info


def evaluate_command(args) -> dict:
    """The document ``refsim eval --json`` prints, computed from the parsed arguments of ``refsim eval``
    (every check, the loading, the cache of ``args.out``, the scheduler): shared by :func:`run` and by
    ``refsim sweep --eval`` (refsim_app.sweep), which fills the same namespace from its own flags."""
    import numpy as np

    from refsim.eval import check_native, evaluate, parse_configs

    spec = None
    if args.preset is not None or args.spec is not None:
        from refsim_cli.numerics import spec_from_args

        spec = spec_from_args(args)
    configs = parse_configs(args.configs, clusters=args.clusters, head_clusters=args.head_clusters,
                            group_size=args.group_size)
    check_native(args.model if args.model.endswith(".gguf") else None, configs)  # before loading anything
    if args.max_tokens is not None and args.max_tokens < args.seqlen:
        raise UsageError(f"--max-tokens {args.max_tokens} is less than one window (--seqlen {args.seqlen})")
    require_extra("hf", *HF_MODULES, what="refsim eval")
    if args.scheduler != "inline":
        require_extra("eval", "dask", "distributed", what="refsim eval with Dask (or pass --scheduler inline)")
    if args.model.endswith(".gguf"):
        require_extra("realmodel", "gguf", "accelerate", what="refsim eval of a .gguf file")
    inputs = {"MODEL": args.model, "--text": args.text, "--token-ids": args.token_ids,
              "--calib-text": args.calib_text, "--calib-token-ids": args.calib_token_ids}
    if args.out is not None:
        check_output(args.out, kinds=("eval",), replace=True, replace_flag=None, inputs=inputs)
    progress = not args.quiet
    if not progress:
        import transformers

        transformers.utils.logging.disable_progress_bar()
    from refsim.eval import ResultCache
    from refsim.rptq.calibrate import float_model, load_causal_lm

    hf, cfg, gguf_file = load_causal_lm(args.model)
    model = float_model(hf, head_dtype=args.head_dtype, gguf=args.model if gguf_file else None)
    del hf
    for c in configs:
        for name, v, lim in (("clusters", c.clusters, min(model.meta["hidden"], model.meta["ffn"])),
                             ("head clusters", c.head_clusters, model.meta["hidden"] // model.meta["heads"])):
            if not c.is_qrazor and v > lim:
                raise UsageError(f"--configs {c.label}: {name} {v} exceeds the {lim} channels; allowed: 1..{lim}")
    vocab = model.meta["vocab"]
    if args.text is not None:
        ids, text_src = _tokenize(args, args.text, "--text"), f"text {args.text}"
    else:
        ids, text_src = _read_ids(args.token_ids, "--token-ids", vocab).ravel(), f"token ids {args.token_ids}"
    calib, calib_note = _calibration(args, vocab, args.calib_seqlen or args.seqlen)
    minfo = _model_info(args.model)
    import hashlib

    run_info = {**minfo, "eval_sha256": hashlib.sha256(ids.tobytes()).hexdigest(),
                "calib_sha256": hashlib.sha256(np.ascontiguousarray(calib).tobytes()).hexdigest(),
                "head_dtype": args.head_dtype}
    cache = ResultCache(args.out) if args.out is not None else None
    client, cluster = _client(args)
    try:
        results = evaluate(model, ids, calib, configs, seqlen=args.seqlen, max_tokens=args.max_tokens,
                           calib_inputs=args.calib_inputs, seed=args.seed, spec=spec, sqnr_tokens=args.sqnr_tokens,
                           cache=cache, run_info=run_info, client=client, progress=progress)
    finally:
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
    note = GGUF_NOTE.format(types=", ".join(minfo["gguf_types"])) if gguf_file else None
    for r in results:
        r["calibration"] = calib_note
        r["calib_inputs"] = args.calib_inputs
        r["head_dtype"] = args.head_dtype
        if note:
            r["weights_note"] = note
    doc = {"model": os.path.abspath(args.model), "model_type": cfg.model_type, "text": text_src,
           "text_tokens": int(ids.size), "calibration": calib_note,
           "numerics": {"rptq_configs": spec_source(args) if spec is not None else "preset rptq (gptq weights)",
                        "qrazor_configs": "preset qrazor"},
           "results": results}
    if note:
        doc["weights_note"] = note
    return doc


def run(args) -> int:
    doc = evaluate_command(args)
    if args.json:
        print(to_json(doc))  # an SQNR of identical tensors is +inf: null in strict JSON
        return 0
    print(f"model: {doc['model']} ({doc['model_type']}); text: {doc['text']}, {doc['text_tokens']} tokens")
    print(f"calibration: {doc['calibration']}")
    note = doc.get("weights_note")
    if note:
        print(f"note: {note}")
    print(f"{'config':<22} {'perplexity':>12} {'tokens':>8} {'logits SQNR dB':>15}")
    for r in doc["results"]:
        print(f"{r['config']:<22} {r['perplexity']:>12.4f} {r['tokens']:>8} {r['sqnr_db']['logits']:>15.2f}")
    return 0


if __name__ == "__main__":
    from refsim_app.cli import main

    sys.exit(main(["eval", *sys.argv[1:]]))
