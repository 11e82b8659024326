"""``refsim demo``: the main job on a built-in default, end to end, from a seed.

One W4A4 linear layer with RPTQ-style per-cluster activation quantization, computed the way an
accelerator would and checked the way a user would:

1. a seeded heavy-tailed activation (Student-t, 3 degrees of freedom, with a few outlier channels
   scaled x20) and Gaussian weights;
2. activations: per-tensor vs per-cluster RPTQ min-max parameters (fp16, signed int4), clusters by
   sorting channels on their range (the demo's stand-in for k-means, stated here);
3. weights: GPTQ-form round-to-nearest int4 per output row (asymmetric, unsigned);
4. packing in the GPTQ word layout and back (bit-exact round trip);
5. per-cluster exact integer sums with zero-point correction (``cluster_int_gemm``), the float32
   epilogue in its documented order, SQNR against the float product;
6. the accumulator width the data needed vs the proven worst case;
7. the presets' disagreement on FBGEMM's example value.

Then it writes the default golden bundle (``refsim golden`` with no preset) and verifies it.

Numerics: ``--preset NAME`` / ``--spec FILE.json`` (default ``rptq``) give the spec of the activation
path: the RPTQ parameter rule's compute dtype, every rule of ``quantize``, and the accumulator width
and overflow of the per-cluster integer GEMM. Weights keep the ``gptq`` preset (GPTQ's own form, a
method of its own); the epilogue is the float32 one, so a spec with a fixed-point ``requant`` is
refused. Both specs are recorded in the bundle's manifest notes (the bundle's own stages are the
default golden preset's, with the specs its manifest records per stage).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from refsim_cli import UsageError, check_memory, check_output, int_range, positive_int, refsim_command
from refsim_cli.numerics import add_spec_arguments, check_applied, spec_from_args, spec_source

#: the spec fields the demo takes from --preset/--spec (the float32 epilogue and no SDR: the others)
APPLIED = ("scale_op", "compute_dtype", "rounding", "zero_point_stage", "signed", "narrow", "saturation",
           "acc_bits", "acc_overflow", "nonfinite")

OUTLIERS = 4  # outlier channels of the seeded activation


def register(sub) -> None:
    p = sub.add_parser("demo", help="run the reference end to end on a built-in seeded default",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int_range(0, 2**63 - 1), default=0,
                   help="seed of numpy's PCG64 generator, an integer in 0..2^63-1 (default 0)")
    p.add_argument("--tokens", type=positive_int, default=256, help="activation rows, a positive integer (default 256)")
    p.add_argument("--hidden", type=int_range(OUTLIERS), default=512,
                   help=f"channels in and out of the layer, an integer >= {OUTLIERS} (default 512)")
    p.add_argument("--out", type=Path, default=Path("out/demo-bundle"),
                   help="where the default golden bundle goes; an earlier bundle there is replaced, any other "
                   "directory is refused (default out/demo-bundle)")
    p.add_argument("--clusters", type=positive_int, default=8,
                   help="activation clusters, an integer in 1..--hidden (default 8)")
    add_spec_arguments(p, default="rptq")
    p.set_defaults(func=run)


def working_bytes(tokens: int, hidden: int, clusters: int) -> int:
    """Memory the demo holds at its peak: float64 copies of x (tokens x hidden) and of the (hidden x hidden)
    weight, and the per-cluster int64 sums (clusters x tokens x hidden)."""
    return 8 * (8 * tokens * hidden + 4 * hidden * hidden + 2 * clusters * tokens * hidden)


DEMO_WRITER = "refsim demo"


def heavy_tailed_activation(rng, tokens, hidden, outliers=OUTLIERS):
    x = rng.standard_t(3, size=(tokens, hidden)).astype(np.float32)
    cols = rng.choice(hidden, size=outliers, replace=False)
    x[:, cols] *= 20.0
    return x


def demo_spec(args):
    """The activation path's spec from --preset/--spec, refused in one line where the demo cannot apply it."""
    return check_applied(spec_from_args(args), command="refsim demo", base="rptq", applied=APPLIED)


def run(args) -> int:
    import refsim
    from golden.bundle import is_bundle_dir

    spec = demo_spec(args)
    if args.clusters > args.hidden:
        raise UsageError(f"--clusters={args.clusters} is not allowed; allowed: 1..--hidden ({args.hidden})")
    check_memory(working_bytes(args.tokens, args.hidden, args.clusters), flag="--tokens/--hidden",
                 value=f"{args.tokens}/{args.hidden}", what="the demo")
    # a re-run replaces the demo's own bundle without a flag; any other bundle, even refsim golden's, is refused
    check_output(args.out, own=lambda p: is_bundle_dir(p, writer=DEMO_WRITER), replace=True, replace_flag=None)
    rng = np.random.default_rng(args.seed)
    t, h, n_out = args.tokens, args.hidden, args.hidden
    x = heavy_tailed_activation(rng, t, h)
    w = (rng.standard_normal((n_out, h)) / np.sqrt(h)).astype(np.float32)  # (out, in)
    y_ref = x.astype(np.float64) @ w.T.astype(np.float64)
    print(f"refsim {refsim.__version__} demo: W4A4 linear layer, tokens={t}, hidden={h}, seed={args.seed} (PCG64)")

    print(f"  numerics: activations {spec_source(args)}, weights preset gptq")
    # activations, per tensor
    s1, z1 = refsim.rptq_params(x.min(), x.max(), bits=4, spec=spec)
    q1 = refsim.quantize(x, s1, z1, bits=4, spec=spec)
    x1 = refsim.dequantize(q1, s1, z1)
    # activations, per cluster: channels sorted by range, cut into equal clusters (stated stand-in)
    cmin, cmax = x.min(axis=0), x.max(axis=0)
    order = np.argsort(cmax - cmin, kind="stable")
    ids = np.empty(h, dtype=np.int64)
    ids[order] = np.arange(h) * args.clusters // h
    sc, zc = refsim.rptq_params(np.array([cmin[ids == c].min() for c in range(args.clusters)]),
                                np.array([cmax[ids == c].max() for c in range(args.clusters)]), bits=4,
                                spec=spec)
    qc = refsim.quantize(x, sc, zc, bits=4, axis=1, clusters=ids, spec=spec)
    xc = refsim.dequantize(qc, sc, zc, axis=1, clusters=ids)
    print(f"  activation SQNR  per-tensor int4: {refsim.sqnr_db(x, x1):6.2f} dB   "
          f"per-cluster ({args.clusters} clusters): {refsim.sqnr_db(x, xc):6.2f} dB")

    # weights: GPTQ-form RTN, per output row
    sw, zw = refsim.gptq_params(w.min(axis=1), w.max(axis=1), bits=4, spec=refsim.preset("gptq"))
    qw = refsim.quantize(w, sw, zw, bits=4, axis=0, spec=refsim.preset("gptq"))
    packed = refsim.pack(qw, "int4_word32", axis=1)
    assert np.array_equal(refsim.unpack(packed, "int4_word32", h, axis=1), qw)
    print(f"  weights: int4 GPTQ form, packed {qw.size} codes into {packed.size} bytes (int4_word32), "
          f"round trip exact; weight SQNR {refsim.sqnr_db(w, refsim.dequantize(qw, sw, zw, axis=0)):.2f} dB")

    # exact integer GEMM per cluster, then the float32 epilogue. Weight zero points are per
    # output row; their scales enter the epilogue per output column.
    isums = refsim.cluster_int_gemm(qc, zc, qw.T, zw, ids, spec=spec)
    y = refsim.float_epilogue(isums, sc.astype(np.float32), sw)
    print(f"  output SQNR vs float product: {refsim.sqnr_db(y_ref, y):6.2f} dB "
          f"(per-cluster int sums {isums.shape}, float32 epilogue, clusters ascending)")

    need = refsim.acc_bits_needed(qc - zc[ids], qw.T - zw)
    worst = refsim.acc_bits_worst_case(h, (int((qc - zc[ids]).min()), int((qc - zc[ids]).max())), (-15, 15))
    print(f"  accumulator: data needed {need.partial} bits (ascending partial sums), "
          f"{need.final} for a wrapping accumulator; proven worst case for these ranges {worst} bits")

    s, v = np.float32(0.00214854861), np.array([0.273939937], np.float32)
    # presets whose scale is a free parameter (a range-reciprocal preset derives it from amax instead)
    free = [n for n in sorted(refsim.PRESETS) if refsim.preset(n).scale_op.value != "mul_range_recip"]
    row = {name: int(refsim.quantize(v, s, bits=9, spec=refsim.preset(name).replace(signed=True))[0])
           for name in free}
    print(f"  FBGEMM's example x=0.273939937, s=0.00214854861 (9-bit codes): {row}")

    import golden

    notes = (f"refsim demo's printed figures: activation spec ({spec_source(args)}) "
             + json.dumps(spec.to_dict(), sort_keys=True),
             "refsim demo's printed figures: weight spec (preset gptq) "
             + json.dumps(refsim.preset("gptq").to_dict(), sort_keys=True))
    path = golden.write_bundle(None, args.out, seed=args.seed, force=True, writer=DEMO_WRITER, notes=notes)
    report = golden.verify_bundle(path)
    print(f"  golden: default bundle written to {args.out} and verified: {'OK' if report.ok else 'FAILED'}")
    cmd = refsim_command()
    print(f"  next: {cmd} verify {args.out};  {cmd} golden --list;  {cmd} cost opt-66b --hw H200 --config W4A4KV")
    return 0 if report.ok else 1


if __name__ == "__main__":
    from refsim_cli.running import package_main

    sys.exit(package_main(register, prog="python -m refsim_app.demo", argv=["demo"] + sys.argv[1:]))
