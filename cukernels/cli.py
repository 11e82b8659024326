"""``refsim validate-kernels``: run the validation harness on the built-in CuPy kernels or on yours.

    refsim validate-kernels                              every built-in kernel, cupy, 200 cases each
    refsim validate-kernels --target lowbit_gemm --examples 1000 --seed 7
    refsim validate-kernels --kernel mypkg.kernels:my_gemm --target lowbit_gemm --xp torch
    refsim validate-kernels --compile                    nvcc-compile every .cu for sm_80 and sm_90

Exit status: 0 all cases match, 1 mismatches or a crash (the report names the first
mismatches, or the exception a crashing kernel raised, and the case that reproduces them),
2 a bad argument (one line), 77 skipped (no cupy or no CUDA device for the built-in kernels).
"""

from __future__ import annotations

import importlib
import sys

from refsim.cliutil import UsageError, positive_int, require_extra, seed_int

SKIPPED = 77


def register(subparsers) -> None:
    p = subparsers.add_parser("validate-kernels", help="validate GPU kernels bit for bit against the reference",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--target", action="append", default=None,
                   help="harness target (repeatable): lowbit_gemm, ln_quant, sdr_encode, sdr_gemm, wxa16; "
                        "default: all (with --kernel: required)")
    p.add_argument("--kernel", default=None, help="your kernel as module:function (default: the built-in one)")
    p.add_argument("--xp", default="cupy", choices=["cupy", "torch", "numpy"],
                   help="array module the inputs are handed in: cupy, torch (CUDA tensors) or numpy (default cupy)")
    p.add_argument("--examples", type=positive_int, default=200,
                   help="cases per target, a positive integer (default 200)")
    p.add_argument("--seed", type=seed_int, default=0, help="campaign seed, an integer in 0..2**64-1 (default 0)")
    p.add_argument("--no-shrink", action="store_true", help="report the first failing case without shrinking it")
    p.add_argument("--compile", action="store_true", help="only compile every .cu file with nvcc (no GPU needed)")
    p.set_defaults(func=run)


def load_kernel(spec: str):
    """The callable named ``module:function``; a one-line UsageError when it cannot be found."""
    mod, sep, attr = spec.partition(":")
    if not sep or not mod or not attr:
        raise UsageError(f"--kernel={spec!r} is not allowed; allowed: module:function (e.g. mypkg.kernels:gemm)")
    try:
        module = importlib.import_module(mod)
    except ModuleNotFoundError as exc:
        raise UsageError(f"--kernel={spec!r}: module {exc.name or mod!r} not found") from None
    except Exception as exc:  # the user's module fails while importing
        raise UsageError(f"--kernel={spec!r}: importing module {mod!r} failed: {type(exc).__name__}: {exc}") from None
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UsageError(f"--kernel={spec!r}: module {mod!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise UsageError(f"--kernel={spec!r}: {attr!r} is a {type(obj).__name__}, not a callable")
    return obj


def _compile_all() -> int:
    import tempfile

    from cukernels.compile import ARCHS, nvcc_compile, nvcc_path, sources

    if nvcc_path() is None:
        print("validate-kernels: nvcc is not on PATH; nothing compiled", file=sys.stderr)
        return SKIPPED
    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        for src in sources():
            for arch in ARCHS:
                proc = nvcc_compile(src, arch, tmp)
                print(f"{src.name} {arch}: {'ok' if proc.returncode == 0 else 'FAILED'}")
                if proc.returncode:
                    failed += 1
                    print(proc.stderr, file=sys.stderr)
    return 1 if failed else 0


def run(args) -> int:
    if args.compile:
        return _compile_all()
    require_extra("test", "hypothesis", what="refsim validate-kernels")
    from cukernels import harness

    targets = args.target or ([] if args.kernel else list(harness.TARGETS))
    if not targets:
        raise UsageError("--target is required with --kernel (which contract does your kernel implement?)")
    for t in targets:
        if t not in harness.TARGETS:
            raise UsageError(f"--target={t!r} is not known; allowed: {', '.join(harness.TARGETS)}")
    user_kernel = load_kernel(args.kernel) if args.kernel else None
    if args.kernel is None or args.xp != "numpy":
        from cukernels.compile import gpu_available

        if not gpu_available():
            print("validate-kernels: skipped: cupy or a CUDA device is missing (use --xp numpy for a numpy kernel, "
                  "or --compile to check that the sources build)", file=sys.stderr)
            return SKIPPED
    status = 0
    for t in targets:
        if user_kernel is not None:
            kernel, name = user_kernel, args.kernel
        else:
            from cukernels.launch import KERNELS

            kernel, name = KERNELS[t][0], f"cukernels.launch.{KERNELS[t][0].__name__}"
        report = harness.validate(kernel, t, max_examples=args.examples, seed=args.seed, xp=args.xp,
                                  kernel_name=name, shrink=not args.no_shrink,
                                  progress=lambda n, t=t: print(f"  {t}: {n} cases", file=sys.stderr))
        print(report.format())
        status |= 0 if report.ok else 1
    return status
