"""``refsim sdr``: QRazor SDR questions from the command line.

    refsim sdr accbits --k 14336 --abits 16 --wbits 8 --group 16 [--acc-bits 32] [--measure] [--json]
    refsim sdr sqnr [--configs W4A4 W4A8] [--groups 16 32 128] [--m 128 --k 4096 --n 128 --seed 0] [--json]
    ... [--preset NAME | --spec FILE.json]   (default: the qrazor preset)

Numerics come from the spec (refsim_cli.numerics): ``accbits`` checks the spec's ``acc_bits`` (``--acc-bits N``
is the same as a spec with ``acc_bits=N``) and ``--measure`` razors with its ``sdr_rounding``; every other rule
is the one refsim.qrazor fixes today (the ``qrazor`` preset's), so a spec that changes another field is refused
(:func:`refsim_cli.numerics.check_applied`) rather than recorded and ignored. ``sqnr`` runs every configuration
under the spec (``refsim.qrazor.sqnr_table(spec=)``): the base-precision quantize rules (signed narrow, as SDR
needs), the SDR rounding and the accumulator.
``--json`` records the spec used.

Every argument is checked before any work, each error naming the flag as typed and its allowed
range; a measurement whose arrays would not fit in the memory available here is refused up front
(:func:`check_work`). ``--json`` prints strict JSON with ``null`` where a ratio is infinite (an SQNR
with no quantization noise). Kept light at import: refsim.qrazor is imported inside the commands.
"""

from __future__ import annotations

import argparse
import sys

from refsim_cli import UsageError, available_memory, int_range, seed_int
from refsim_cli.numerics import add_spec_arguments, check_applied, spec_from_args, spec_source

ACCBITS_APPLIED = ("acc_bits", "sdr_rounding")  # what `sdr accbits` takes from the spec (module docstring)
SQNR_APPLIED = ("scale_op", "rounding", "saturation", "sdr_rounding", "acc_bits", "acc_overflow", "nonfinite")

#: base precisions SDR razors from (refsim.sdr.sdr_encode: int2..int16 sign-magnitude lanes)
BASE_BITS = (2, 16)
MAX_KEEP = 7  # codes are at most 8-bit sign-magnitude
MAX_GROUP = 1 << 16
MAX_K = 1 << 40  # the worst-case bound is exact integer arithmetic: any K up to this
MAX_DIM = 1 << 24  # rows, columns and K of a measured product (memory is checked separately)
QRAZOR_CONFIGS = ("W4A4", "W4A4KV4", "W4A8")
JSON_NULL = "null: an infinite SQNR (the quantized product equals the float product: no noise)"
MAX_MACS = 1 << 34  # a measured product larger than this would run for many minutes here


def power_of_two(text: str) -> int:
    """An argparse ``type``: a power of two in 2..MAX_GROUP (an SDR group size)."""
    v = int_range(2, MAX_GROUP)(text)
    if v & (v - 1):
        raise argparse.ArgumentTypeError(f"allowed: a power of two in 2..{MAX_GROUP}; got {v}")
    return v


def register(subparsers) -> None:
    p = subparsers.add_parser("sdr", help="QRazor SDR: accumulator widths and SQNR of the razored GEMM",
                              description="QRazor SDR (arXiv 2501.13331): accumulator widths and SQNR.")
    sub = p.add_subparsers(dest="sdr_command", metavar="SDR_COMMAND", required=True)
    lo, hi = BASE_BITS

    acc = sub.add_parser("accbits", help="is an N-bit accumulator enough for this K and configuration?",
                         description="Worst-case (proven) accumulator bits of an SDR GEMM over K, and with "
                                     "--measure the bits synthetic data needed.")
    acc.add_argument("--k", type=int_range(1, MAX_K), required=True, help=f"reduction length K, 1..{MAX_K}")
    acc.add_argument("--abits", type=int_range(lo, hi), default=16,
                     help=f"activation base precision in bits, {lo}..{hi} (default 16)")
    acc.add_argument("--wbits", type=int_range(lo, hi), default=8,
                     help=f"weight base precision in bits, {lo}..{hi} (default 8)")
    acc.add_argument("--akeep", type=int_range(1, MAX_KEEP), default=3,
                     help=f"activation magnitude bits kept, 1..min(--abits - 1, {MAX_KEEP}) (3: A4, 7: A8; "
                          "default 3)")
    acc.add_argument("--wkeep", type=int_range(1, MAX_KEEP), default=3,
                     help=f"weight magnitude bits kept, 1..min(--wbits - 1, {MAX_KEEP}) (default 3)")
    acc.add_argument("--group", type=power_of_two, default=16,
                     help=f"SDR group size, a power of two in 2..{MAX_GROUP} (default 16)")
    acc.add_argument("--acc-bits", type=int_range(2, 64), default=None,
                     help="accumulator width to check, 2..64 (default: the spec's acc_bits, 32 for qrazor)")
    acc.add_argument("--measure", action="store_true",
                     help="also measure the bits needed on synthetic heavy-tailed activations x Gaussian weights")
    acc.add_argument("--m", type=int_range(1, MAX_DIM), default=None,
                     help="rows of the measured product, with --measure (default 32)")
    acc.add_argument("--n", type=int_range(1, MAX_DIM), default=None,
                     help="columns of the measured product, with --measure (default 32)")
    acc.add_argument("--seed", type=seed_int, default=None,
                     help="seed of the measured data (PCG64), 0..2^64-1, with --measure (default 0)")
    acc.add_argument("--json", action="store_true", help="print the answer as JSON")
    add_spec_arguments(acc, default="qrazor")
    acc.set_defaults(func=run_accbits)

    sq = sub.add_parser("sqnr", help="SQNR of the QRazor path on synthetic heavy-tailed activations",
                        description="SQNR (dB) of the QRazor path against the float product, per configuration "
                                    "and SDR group size.")
    sq.add_argument("--configs", nargs="+", choices=QRAZOR_CONFIGS, default=["W4A4", "W4A8"], metavar="CONFIG",
                    help=f"QRazor configurations, any of {', '.join(QRAZOR_CONFIGS)} (default W4A4 W4A8)")
    sq.add_argument("--groups", nargs="+", type=power_of_two, default=[16, 32, 128], metavar="G",
                    help=f"SDR group sizes, powers of two in 2..{MAX_GROUP} (default 16 32 128)")
    sq.add_argument("--m", type=int_range(1, MAX_DIM), default=128,
                    help="rows (tokens) of the activations (default 128)")
    sq.add_argument("--k", type=int_range(1, MAX_DIM), default=4096,
                    help="reduction length K (default 4096)")
    sq.add_argument("--n", type=int_range(1, MAX_DIM), default=128,
                    help="columns (output channels) of the weights (default 128)")
    sq.add_argument("--seed", type=seed_int, default=0, help="seed of the synthetic data (PCG64), 0..2^64-1 "
                                                             "(default 0)")
    sq.add_argument("--json", action="store_true", help="print the table as JSON")
    add_spec_arguments(sq, default="qrazor")
    sq.set_defaults(func=run_sqnr)


def check_work(what: str, *, bytes_needed: int, macs: int) -> None:
    """Refuse, before any work, a computation that would not fit in memory here or would run for hours."""
    avail = available_memory() or (1 << 62)  # unknown: let the multiply-accumulate bound decide
    if bytes_needed > avail // 2:
        raise UsageError(f"{what} needs about {bytes_needed / 2**30:.1f} GiB of memory; "
                         f"{avail / 2**30:.1f} GiB is available here: choose smaller sizes")
    if macs > MAX_MACS:
        raise UsageError(f"{what} is {macs:.3g} multiply-accumulates (more than {MAX_MACS:.3g}, hours here): "
                         f"choose smaller sizes")


def _check_keep(flag: str, keep: int, bits_flag: str, bits: int) -> None:
    top = min(bits - 1, MAX_KEEP)
    if not 1 <= keep <= top:
        raise UsageError(f"{flag} {keep}: allowed: an integer in 1..{top} for {bits_flag} {bits} "
                         f"(kept magnitude bits below the {bits - 1} magnitude bits of int{bits}, at most {MAX_KEEP})")


def accbits_spec(args):
    """The spec of ``sdr accbits``: --preset/--spec, with --acc-bits as an edit of its acc_bits."""
    spec = spec_from_args(args)
    if args.acc_bits is not None:
        spec = spec.replace(acc_bits=args.acc_bits)
    return check_applied(spec, command="refsim sdr accbits", base="qrazor", applied=ACCBITS_APPLIED)


def run_accbits(args) -> int:
    spec = accbits_spec(args)
    _check_keep("--akeep", args.akeep, "--abits", args.abits)
    _check_keep("--wkeep", args.wkeep, "--wbits", args.wbits)
    if not args.measure:
        given = [f for f, v in (("--m", args.m), ("--n", args.n), ("--seed", args.seed)) if v is not None]
        if given:
            raise UsageError(f"{', '.join(given)}: used only with --measure (they size the measured product)")
    m = 32 if args.m is None else args.m
    n = 32 if args.n is None else args.n
    seed = 0 if args.seed is None else args.seed
    if args.measure:
        # float64 draws, int64 decoded operands and their sign splits (refsim.sdr.sdr_acc_bits_needed)
        check_work(f"--measure --m {m} --k {args.k} --n {n} ({m}x{args.k} @ {args.k}x{n})",
                   bytes_needed=96 * (m * args.k + args.k * n) + 64 * m * n, macs=4 * m * n * args.k)

    from refsim.qrazor import (
        QRazorConfig,
        accumulator_question,
        gaussian_weights,
        heavy_tailed_activations,
        qrazor_matmul,
    )

    measured, on = None, ""
    kw = dict(a_bits=args.abits, w_bits=args.wbits, a_keep=args.akeep, w_keep=args.wkeep, group_size=args.group,
              spec=spec)
    accumulator_question(args.k, **kw)  # any remaining argument error before any work
    if args.measure:
        print(f"measuring on {m}x{args.k} @ {args.k}x{n} ...", file=sys.stderr)
        # the one call site that hands the spec's SDR rounding to refsim.qrazor (its config holds it here)
        cfg = QRazorConfig(name="custom", w_keep=args.wkeep, a_keep=args.akeep, group_size=args.group,
                           w_bits=args.wbits, a_bits=args.abits,
                           spec=spec.replace(acc_bits=64, acc_overflow="wrap"))  # measures, never wraps
        x = heavy_tailed_activations(m, args.k, seed=seed)
        w = gaussian_weights(args.k, n, seed=seed + 1)
        measured = qrazor_matmul(x, w, config=cfg, measure_acc=True).acc_needed
        on = (f"Student-t(3) activations with 1% outlier channels x20 ({m}x{args.k}, self-calibrated) "
              f"x N(0, 1/K) weights ({args.k}x{n}), seed {seed}")
    answer = accumulator_question(args.k, measured=measured, measured_on=on, **kw)
    if args.json:
        from refsim.outputs import to_json

        doc = {"k": answer.k, "a_bits": answer.a_bits, "w_bits": answer.w_bits, "a_keep": answer.a_keep,
               "w_keep": answer.w_keep, "group_size": answer.group_size, "acc_bits": answer.acc_bits,
               "enough": answer.enough, "worst_case_bits": answer.worst_case_bits,
               "base_worst_case_bits": answer.base_worst_case_bits, "max_k": answer.max_k,
               "group_sum_bits": answer.group_sum_bits, "max_shift": answer.max_shift,
               "measured": None if measured is None else {
                   "final_bits": int(measured.final), "partial_bits": int(measured.partial),
                   "bound_bits": int(measured.bound), "m": m, "n": n, "seed": seed, "on": on},
               "spec_source": spec_source(args), "spec": spec.to_dict()}
        print(to_json(doc))
    else:
        print(answer.text())
    return 0


def run_sqnr(args) -> int:
    spec = check_applied(spec_from_args(args), command="refsim sdr sqnr", base="qrazor", applied=SQNR_APPLIED)
    m, k, n = args.m, args.k, args.n
    runs = len(args.configs) * len(args.groups)
    # five (m, k) float64 draws (the operand and four calibration batches), the razored int64 operands,
    # and the attention-score product q (m, 128) @ k_cache^T (128, m)
    bytes_needed = 96 * m * k + 64 * k * n + 64 * m * n + 64 * m * m + (1 << 20)
    check_work(f"--m {m} --k {k} --n {n} ({m}x{k} @ {k}x{n}, {runs} runs)", bytes_needed=bytes_needed,
               macs=runs * (m * n * k + m * m * 128))
    from refsim.qrazor import sqnr_table

    if not args.json:
        print("x: Student-t(3) with 1% outlier channels x20, static absmax on 4 other batches; W ~ N(0, 1/K); "
              "QK: q @ k_cache^T, both heavy-tailed, head dim 128")
        print(f"{'config':8} {'group':>5} {'XW SQNR dB':>10} {'QK SQNR dB':>10} {'A bits/elt':>10} "
              f"{'W bits/elt':>10} {'KV bits/elt':>11}")

    def show(r):
        print(f"{r['config']:8} {r['group_size']:5d} {r['sqnr_db']:10.2f} {r['qk_sqnr_db']:10.2f} "
              f"{r['a_effective_bits']:10.4f} {r['w_effective_bits']:10.4f} {r['kv_effective_bits']:11.4f}",
              flush=True)

    rows = sqnr_table(tuple(args.configs), tuple(args.groups), m=m, k=k, n=n, seed=args.seed,
                      progress=None if args.json else show, spec=spec)
    if args.json:
        from refsim.outputs import to_json

        print(to_json({"m": m, "k": k, "n": n, "seed": args.seed, "null": JSON_NULL, "spec_source": spec_source(args),
                       "spec": spec.to_dict(),
                       "data": "x: Student-t(3), 1% outlier channels x20, static absmax on 4 other batches; "
                               "W ~ N(0, 1/K); QK: q @ k_cache^T, both heavy-tailed, head dim 128",
                       "rows": [{k_: (float(v) if isinstance(v, float) else v) for k_, v in r.items()}
                                for r in rows]}))
    return 0
