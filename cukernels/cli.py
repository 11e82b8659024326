"""``refsim validate-kernels``: run the validation harness on the built-in kernels or on yours.

    refsim validate-kernels --list                       every target, what it checks, whether it runs here
    refsim validate-kernels                              every target with its built-in kernel, 200 cases each
    refsim validate-kernels --target lowbit_gemm --examples 1000 --seed 7 --bits 4
    refsim validate-kernels --kernel mypkg.kernels:my_gemm --target lowbit_gemm --xp torch
    refsim validate-kernels --kernel torch_int_mm --examples 300     a built-in CPU adapter by name
    refsim validate-kernels --compile                    nvcc-compile every .cu for sm_80 and sm_90

Targets are this project's CUDA kernels (cukernels/harness.py; built-in kernels need cupy and a CUDA device)
and real kernels that run on this CPU (cukernels/cpu_targets.py: torch int4pack mm and _int_mm, ONNX Runtime
MatMulInteger and MatMulNBits). ``--xp`` defaults to cupy for a CUDA target and numpy for a CPU one; ``--xp
torch`` hands a CPU target CPU tensors and a CUDA target CUDA tensors.

Exit status: 0 all cases match, 1 mismatches or a crash (the report names the first
mismatches, or the exception a crashing kernel raised, and the case that reproduces them),
2 a bad argument (one line), 77 every selected target skipped (no cupy or no CUDA device for a
CUDA target, a missing library for a CPU one; one line each).
"""

from __future__ import annotations

import importlib
import sys

from refsim_cli import UsageError, missing_modules, positive_int, require_extra, seed_int

SKIPPED = 77

# Bit widths the CUDA targets' cases draw (``--bits`` narrows to a subset); sdr_* take none.
CUDA_BITS = {"lowbit_gemm": (3, 4), "ln_quant": (3, 4), "wxa16": (3, 4)}


def register(subparsers) -> None:
    p = subparsers.add_parser("validate-kernels", help="validate kernels bit for bit against the reference",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--list", action="store_true", help="name every target, what it checks and whether it runs here")
    p.add_argument("--target", action="append", default=None,
                   help="harness target (repeatable; --list names them); default: all, or with --kernel NAME "
                        "the adapter's own target (with --kernel module:function: required)")
    p.add_argument("--kernel", default=None,
                   help="your kernel as module:function, or a built-in CPU adapter by name (e.g. torch_int_mm); "
                        "default: the built-in kernel of each target")
    p.add_argument("--xp", default=None, choices=["cupy", "torch", "numpy"],
                   help="array module the inputs are handed in: cupy, torch (CUDA tensors for a CUDA target, CPU "
                        "tensors for a CPU one) or numpy (default: cupy for CUDA targets, numpy for CPU ones)")
    p.add_argument("--bits", default=None,
                   help="comma-separated bit widths the cases draw, e.g. 4 or 3,4 (each must be one the selected "
                        "targets allow; --list names them)")
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


def _catalogue():
    """name -> (kind, description, allowed bits) for every target, CUDA ones first."""
    from cukernels import cpu_targets, harness

    out = {n: ("cuda", t.description, CUDA_BITS.get(n, ())) for n, t in harness.TARGETS.items()}
    out.update({n: ("cpu", t.description, cpu_targets.BITS[n]) for n, t in cpu_targets.CPU_TARGETS.items()})
    return out


def _why_not_here(name, kind) -> str | None:
    """None when the target's built-in kernel can run on this machine, else the reason."""
    if kind == "cuda":
        from cukernels.compile import gpu_available

        return None if gpu_available() else "needs cupy and a CUDA device"
    from cukernels import cpu_targets

    missing = missing_modules(*cpu_targets.REQUIRES[name])
    return f"needs {', '.join(missing)}" if missing else None


def _list(catalogue) -> int:
    from cukernels.cpu_targets import KNOWN_UPSTREAM_BUGS

    for name, (kind, desc, bits) in catalogue.items():
        why = _why_not_here(name, kind)
        widths = ",".join(map(str, bits)) or "-"
        known = KNOWN_UPSTREAM_BUGS.get(name)
        note = f"; known upstream bug, run only with --target: {known}" if known else ""
        print(f"{name:<24} {kind:<4} bits {widths:<4} {desc}; runs here: {'yes' if why is None else 'no, ' + why}"
              f"{note}")
    return 0


def _parse_bits(text, targets, catalogue):
    if text is None:
        return None
    try:
        bits = tuple(sorted({int(b) for b in text.split(",")}))
    except ValueError:
        raise UsageError(f"--bits={text!r} is not allowed; allowed: comma-separated integers, e.g. 4 or 3,4") from None
    for t in targets:
        allowed = catalogue[t][2]
        if not allowed:
            raise UsageError(f"--bits is not allowed with --target {t} (its cases draw no bit width)")
        bad = [b for b in bits if b not in allowed]
        if bad:
            raise UsageError(f"--bits={text!r} is not allowed for target {t}; allowed: {', '.join(map(str, allowed))}")
    return bits


def _resolve_kernel(spec, targets):
    """(callable, name, default targets) for ``--kernel``: a built-in CPU adapter name or module:function."""
    from cukernels import cpu_targets

    if spec is None:
        return None, None, None
    if spec in cpu_targets.ADAPTERS:
        fn = cpu_targets.ADAPTERS[spec]
        serves = [t for t, a in cpu_targets.ADAPTERS.items() if a is fn]
        for t in targets or ():
            if t not in serves:
                raise UsageError(f"--kernel {spec} implements target {', '.join(serves)}, not --target {t}")
        return fn, f"cukernels.cpu_targets.{fn.__name__}", [spec]
    if ":" not in spec:
        raise UsageError(f"--kernel={spec!r} is not allowed; allowed: module:function (e.g. mypkg.kernels:gemm) "
                         f"or a built-in adapter: {', '.join(cpu_targets.ADAPTERS)}")
    return load_kernel(spec), spec, None


def run(args) -> int:
    if args.compile:
        return _compile_all()
    catalogue = _catalogue()
    if args.list:
        return _list(catalogue)
    require_extra("test", "hypothesis", what="refsim validate-kernels")
    from cukernels import cpu_targets, harness

    for t in args.target or ():
        if t not in catalogue:
            raise UsageError(f"--target={t!r} is not known; allowed: {', '.join(catalogue)}")
    if args.kernel is not None and ":" in args.kernel and not args.target:
        raise UsageError("--target is required with --kernel (which contract does your kernel implement?)")
    user_kernel, user_name, own_targets = _resolve_kernel(args.kernel, args.target)
    targets = args.target or own_targets or [t for t in catalogue if t not in cpu_targets.KNOWN_UPSTREAM_BUGS]
    bits = _parse_bits(args.bits, targets, catalogue)
    if args.xp == "cupy":
        cpu = [t for t in targets if catalogue[t][0] == "cpu"]
        if cpu:
            raise UsageError(f"--xp cupy is not allowed with the CPU target {cpu[0]}; allowed: numpy, torch")
    options = {} if bits is None else {"bits": bits}
    status, ran = 0, 0
    for t in targets:
        kind = catalogue[t][0]
        xp = args.xp or ("cupy" if kind == "cuda" else "numpy")
        if kind == "cpu":
            why = _why_not_here(t, kind) if user_kernel is None else None
        else:  # a numpy kernel of yours runs anywhere; cupy, torch CUDA tensors or a built-in one need a device
            why = None if (user_kernel is not None and xp == "numpy") else _why_not_here(t, kind)
        if why:
            print(f"validate-kernels: {t}: skipped: {why} (--list shows what runs here; --xp numpy runs a numpy "
                  f"kernel of yours on a CUDA target, --compile checks that the sources build)", file=sys.stderr)
            continue
        if user_kernel is not None:
            kernel, name = user_kernel, user_name
        elif kind == "cpu":
            kernel, name = cpu_targets.ADAPTERS[t], f"cukernels.cpu_targets.{cpu_targets.ADAPTERS[t].__name__}"
        else:
            from cukernels.launch import KERNELS

            kernel, name = KERNELS[t][0], f"cukernels.launch.{KERNELS[t][0].__name__}"
        common = dict(max_examples=args.examples, seed=args.seed, kernel_name=name, shrink=not args.no_shrink,
                      progress=lambda n, t=t: print(f"  {t}: {n} cases", file=sys.stderr), **options)
        if kind == "cpu":
            report = cpu_targets.validate(t, kernel, xp=harness.ArrayModule(xp, device="cpu"), **common)
        else:
            report = harness.validate(kernel, t, xp=xp, **common)
        print(report.format())
        ran += 1
        status |= 0 if report.ok else 1
    return status if ran else SKIPPED
