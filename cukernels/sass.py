"""What the kernels compile to, measured without a GPU: SASS instruction counts, registers, spills, shared memory.

    python -m cukernels.sass                 # sm_90 and sm_80, every kernel (docs/kernels.md records the output)
    python -m cukernels.sass --arch sm_90

Each source is compiled to a cubin by nvcc (``compile.nvcc_compile`` with ``-Xptxas -v``: registers,
spill stores / loads, shared memory per function) and disassembled by ``cuobjdump -sass`` (the
``nvidia-cuda-cuobjdump`` and ``nvidia-cuda-nvdisasm`` wheels, the ``[sass]`` extra). A loop is a
backward branch ``BRA target`` with target < its address; its body is every instruction from the
target to the branch. Per kernel:

- W4A16 / W3A16: the loop that holds the weight loads (the K-chunk loop). Codes per iteration are
  the weight bytes it loads (``LDG.E.128`` = 16 bytes, ``.64`` = 8, plain ``LDG.E`` = 4; the 1- and
  2-byte loads are x, scales and zero points) times 8 / bits; instructions per weight code = body
  length / codes per iteration.
- W4A4 / W3A3: the innermost loop holding ``IMMA``; instructions per IMMA = body length / IMMAs.

Body length counts every instruction of the body once: the issued instructions of one iteration
of the common path (the bodies hold no inner loop, only forward branches that skip a lane's tail).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cukernels.compile import KERNEL_DIR, nvcc_compile, nvcc_path

_INSN = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(@!?U?P[T0-9]+\s+)?([A-Z][A-Z0-9_.]*)([^;]*);")
_FUNC = re.compile(r"Function\s*:\s*(\S+)")
_PTXAS_FUNC = re.compile(r"Compiling entry function '([^']+)' for '(sm_\d+)'")
_PTXAS_SPILL = re.compile(r"(\d+) bytes spill stores, (\d+) bytes spill loads")
_PTXAS_USED = re.compile(r"Used (\d+) registers(?:.*?(\d+) bytes smem)?")
# Kernels measured, by mangled-name fragment (wxa16 instantiations are templates) -> (label, kind, bits)
KERNELS = {
    "wxa16_kernelILi4ELi1E": ("W4A16 M=1", "wxa16", 4),
    "wxa16_kernelILi4ELi16E": ("W4A16 M=16", "wxa16", 4),
    "wxa16_kernelILi3ELi1E": ("W3A16 M=1", "wxa16", 3),
    "wxa16_kernelILi3ELi16E": ("W3A16 M=16", "wxa16", 3),
    "lowbit_gemm_w4a4": ("W4A4", "gemm", 4),
    "lowbit_gemm_w3a3": ("W3A3", "gemm", 3),
}


def tool_path(name: str) -> str | None:
    """``name`` on PATH, else in the nvidia-* wheels' bin folders (cuobjdump, nvdisasm)."""
    found = shutil.which(name)
    if found:
        return found
    try:
        import nvidia
    except ImportError:
        return None
    for root in getattr(nvidia, "__path__", []):
        for sub in ("cu13", "cuda_cuobjdump", "cuda_nvdisasm", "cu12"):
            cand = Path(root) / sub / "bin" / name
            if cand.is_file() and os.access(cand, os.X_OK):
                return str(cand)
    return None


def tools_missing() -> list[str]:
    """Which of nvcc, cuobjdump, nvdisasm cannot be found."""
    out = [] if nvcc_path() else ["nvcc"]
    return out + [t for t in ("cuobjdump", "nvdisasm") if tool_path(t) is None]


@dataclass
class Function:
    name: str
    insns: list  # (address, opcode, operands)
    registers: int | None = None
    spill_stores: int | None = None
    spill_loads: int | None = None
    shared_bytes: int = 0

    def loops(self) -> list[tuple[int, int]]:
        """(first, last) instruction indices of each loop (a backward branch and its target)."""
        index = {a: i for i, (a, _, _) in enumerate(self.insns)}
        out = []
        for i, (addr, op, rest) in enumerate(self.insns):
            if op.startswith("BRA"):
                m = re.search(r"0x([0-9a-f]+)", rest)
                if m and int(m.group(1), 16) < addr and int(m.group(1), 16) in index:
                    out.append((index[int(m.group(1), 16)], i))
        return out

    def body(self, loop) -> list:
        return self.insns[loop[0]:loop[1] + 1]


def parse_sass(text: str) -> dict[str, Function]:
    funcs: dict[str, Function] = {}
    cur = None
    for line in text.splitlines():
        m = _FUNC.search(line)
        if m:
            cur = funcs.setdefault(m.group(1), Function(m.group(1), []))
            continue
        m = _INSN.search(line)
        if m and cur is not None:
            cur.insns.append((int(m.group(1), 16), m.group(3), m.group(4)))
    return funcs


def parse_ptxas(stderr: str, funcs: dict[str, Function]) -> None:
    cur = None
    for line in stderr.splitlines():
        m = _PTXAS_FUNC.search(line)
        if m:
            cur = funcs.get(m.group(1))
            continue
        if cur is None:
            continue
        m = _PTXAS_SPILL.search(line)
        if m:
            cur.spill_stores, cur.spill_loads = int(m.group(1)), int(m.group(2))
        m = _PTXAS_USED.search(line)
        if m:
            cur.registers = int(m.group(1))
            cur.shared_bytes = int(m.group(2) or 0)


def load_bytes(op: str) -> int:
    """Bytes of one global load instruction by its width suffix; 0 for the 1- and 2-byte loads."""
    if not op.startswith("LDG"):
        return 0
    if ".U8" in op or ".S8" in op or ".U16" in op or ".S16" in op:
        return 0
    for suffix, nbytes in ((".128", 16), (".64", 8)):
        if suffix in op:
            return nbytes
    return 4


def measure(func: Function, kind: str, bits: int) -> dict:
    """The figures of one kernel: main-loop length and the per-code or per-IMMA count."""
    fig = {"registers": func.registers, "spill_stores": func.spill_stores, "spill_loads": func.spill_loads,
           "shared_bytes": func.shared_bytes, "instructions": len(func.insns)}
    loops = func.loops()
    if kind == "wxa16":
        cands = [lp for lp in loops if sum(load_bytes(op) for _, op, _ in func.body(lp)) > 0]
        if not cands:
            raise RuntimeError(f"{func.name}: no loop with weight loads found in the SASS")
        lp = max(cands, key=lambda lp: lp[1] - lp[0])
        body = func.body(lp)
        codes = sum(load_bytes(op) for _, op, _ in body) * 8 // bits
        fig.update(loop_length=len(body), codes_per_iteration=codes, per_code=len(body) / codes,
                   ffma=sum(op.startswith("FFMA") for _, op, _ in body))
    else:
        cands = [lp for lp in loops if any(op.startswith("IMMA") for _, op, _ in func.body(lp))]
        if not cands:
            raise RuntimeError(f"{func.name}: no loop with IMMA found in the SASS")
        lp = min(cands, key=lambda lp: lp[1] - lp[0])  # the innermost
        body = func.body(lp)
        imma = sum(op.startswith("IMMA") for _, op, _ in body)
        fig.update(loop_length=len(body), imma=imma, per_imma=len(body) / imma,
                   ldsm=sum(op.split(".")[0] == "LDSM" for _, op, _ in body),  # ldmatrix
                   ldgsts=sum(op.split(".")[0] == "LDGSTS" for _, op, _ in body),  # cp.async
                   lds=sum(op.split(".")[0] == "LDS" for _, op, _ in body),
                   ldg=sum(op.split(".")[0] == "LDG" for _, op, _ in body))
    return fig


def compile_and_dump(source: Path, arch: str, out_dir, defines=()) -> dict[str, Function]:
    """Every function of ``source`` compiled for ``arch`` (``-D`` each of ``defines``): SASS and ptxas figures."""
    proc = nvcc_compile(source, arch, out_dir, extra=("-Xptxas", "-v", *(f"-D{d}" for d in defines)))
    if proc.returncode:
        raise RuntimeError(f"nvcc failed for {source.name} {arch}:\n{proc.stderr}")
    cubin = Path(out_dir) / f"{Path(source).stem}.{arch}.cubin"
    env = dict(os.environ)
    nvdisasm = tool_path("nvdisasm")
    if nvdisasm:
        env["PATH"] = str(Path(nvdisasm).parent) + os.pathsep + env.get("PATH", "")
    dump = subprocess.run([tool_path("cuobjdump"), "-sass", str(cubin)], capture_output=True, text=True, env=env)
    if dump.returncode:
        raise RuntimeError(f"cuobjdump failed on {cubin.name}: {dump.stderr.strip()}")
    funcs = parse_sass(dump.stdout)
    parse_ptxas(proc.stderr, funcs)
    return funcs


def measure_all(archs=("sm_90", "sm_80"), sources=("wxa16", "lowbit_gemm")) -> dict:
    """{(label, arch): figures} for every kernel in KERNELS."""
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for arch in archs:
            for src in sources:
                funcs = compile_and_dump(KERNEL_DIR / f"{src}.cu", arch, tmp)
                for fname, func in funcs.items():
                    for frag, (label, kind, bits) in KERNELS.items():
                        if frag in fname:
                            out[(label, arch)] = measure(func, kind, bits)
    return out


def format_table(figs: dict) -> str:
    lines = ["| kernel | arch | main loop (instructions) | per weight code | per IMMA | registers | spills "
             "(st/ld bytes) | static shared |", "|---|---|---|---|---|---|---|---|"]
    for (label, arch), f in figs.items():
        per_code = f"{f['per_code']:.2f} ({f['codes_per_iteration']} codes)" if "per_code" in f else ""
        per_imma = (f"{f['per_imma']:.1f} ({f['imma']} IMMA, {f['ldsm']} LDSM, {f['ldgsts']} LDGSTS)"
                    if "per_imma" in f else "")
        lines.append(f"| {label} | {arch} | {f['loop_length']} | {per_code} | {per_imma} | {f['registers']} | "
                     f"{f['spill_stores']}/{f['spill_loads']} | {f['shared_bytes']} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", action="append", choices=["sm_80", "sm_90"],
                    help="target architecture (repeatable; default: sm_90 and sm_80)")
    args = ap.parse_args(argv)
    missing = tools_missing()
    if missing:
        print(f"cukernels.sass: {', '.join(missing)} not found (nvcc from the CUDA toolkit; cuobjdump and nvdisasm "
              "from the [sass] extra: pip install 'refsim[sass]')", file=sys.stderr)
        return 2
    print(format_table(measure_all(tuple(args.arch or ("sm_90", "sm_80")))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
