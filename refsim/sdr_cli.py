"""``refsim sdr``: QRazor SDR questions from the command line.

    refsim sdr accbits --k 14336 --abits 16 --wbits 8 --group 16 [--acc-bits 32] [--measure]
    refsim sdr sqnr [--configs W4A4 W4A8] [--groups 16 32 128] [--m 128 --k 4096 --n 128 --seed 0]

Kept light at import: refsim.qrazor is imported inside the commands.
"""

from __future__ import annotations

import sys


def register(subparsers) -> None:
    p = subparsers.add_parser("sdr", help="QRazor SDR: accumulator widths and SQNR of the razored GEMM")
    sub = p.add_subparsers(dest="sdr_command", metavar="SDR_COMMAND", required=True)

    acc = sub.add_parser("accbits", help="is an N-bit accumulator enough for this K and configuration?")
    acc.add_argument("--k", type=int, required=True, help="reduction length K")
    acc.add_argument("--abits", type=int, default=16, help="activation base bits (default 16)")
    acc.add_argument("--wbits", type=int, default=8, help="weight base bits (default 8)")
    acc.add_argument("--akeep", type=int, default=3, help="activation magnitude bits kept (3: A4, 7: A8)")
    acc.add_argument("--wkeep", type=int, default=3, help="weight magnitude bits kept (default 3)")
    acc.add_argument("--group", type=int, default=16, help="SDR group size (power of two)")
    acc.add_argument("--acc-bits", type=int, default=32, help="accumulator width to check (default 32)")
    acc.add_argument("--measure", action="store_true",
                     help="also measure the bits needed on synthetic heavy-tailed activations x Gaussian weights")
    acc.add_argument("--m", type=int, default=32, help="rows of the measured product (default 32)")
    acc.add_argument("--n", type=int, default=32, help="columns of the measured product (default 32)")
    acc.add_argument("--seed", type=int, default=0)
    acc.set_defaults(func=run_accbits)

    sq = sub.add_parser("sqnr", help="SQNR of the QRazor path on synthetic heavy-tailed activations")
    sq.add_argument("--configs", nargs="+", default=["W4A4", "W4A8"])
    sq.add_argument("--groups", nargs="+", type=int, default=[16, 32, 128])
    sq.add_argument("--m", type=int, default=128)
    sq.add_argument("--k", type=int, default=4096)
    sq.add_argument("--n", type=int, default=128)
    sq.add_argument("--seed", type=int, default=0)
    sq.set_defaults(func=run_sqnr)


def run_accbits(args) -> int:
    from refsim.qrazor import (
        QRazorConfig,
        accumulator_question,
        gaussian_weights,
        heavy_tailed_activations,
        qrazor_matmul,
    )

    measured, on = None, ""
    kw = dict(a_bits=args.abits, w_bits=args.wbits, a_keep=args.akeep, w_keep=args.wkeep, group_size=args.group,
              acc_bits=args.acc_bits)
    accumulator_question(args.k, **kw)  # argument errors before any work
    if args.measure:
        print(f"measuring on {args.m}x{args.k} @ {args.k}x{args.n} ...", file=sys.stderr)
        cfg = QRazorConfig(name="custom", w_keep=args.wkeep, a_keep=args.akeep, group_size=args.group,
                           w_bits=args.wbits, a_bits=args.abits)
        x = heavy_tailed_activations(args.m, args.k, seed=args.seed)
        w = gaussian_weights(args.k, args.n, seed=args.seed + 1)
        measured = qrazor_matmul(x, w, config=cfg, measure_acc=True).acc_needed
        on = (f"Student-t(3) activations with 1% outlier channels x20 ({args.m}x{args.k}, self-calibrated) "
              f"x N(0, 1/K) weights ({args.k}x{args.n}), seed {args.seed}")
    print(accumulator_question(args.k, measured=measured, measured_on=on, **kw).text())
    return 0


def run_sqnr(args) -> int:
    from refsim.qrazor import sqnr_table

    print("x: Student-t(3) with 1% outlier channels x20, static absmax on 4 other batches; W ~ N(0, 1/K); "
          "QK: q @ k_cache^T, both heavy-tailed, head dim 128")
    print(f"{'config':8} {'group':>5} {'XW SQNR dB':>10} {'QK SQNR dB':>10} {'A bits/elt':>10} {'W bits/elt':>10} "
          f"{'KV bits/elt':>11}")

    def show(r):
        print(f"{r['config']:8} {r['group_size']:5d} {r['sqnr_db']:10.2f} {r['qk_sqnr_db']:10.2f} "
              f"{r['a_effective_bits']:10.4f} {r['w_effective_bits']:10.4f} {r['kv_effective_bits']:11.4f}",
              flush=True)

    sqnr_table(tuple(args.configs), tuple(args.groups), m=args.m, k=args.k, n=args.n, seed=args.seed, progress=show)
    return 0
