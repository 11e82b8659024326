# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 2. Kernel developer: validate a real kernel, catch a broken one, reproduce its failure
#
# You write (or adopt) a low-bit GEMM kernel and need to know it computes what the numerics say,
# on the awkward shapes too: odd M and N, K that is one group or many, inputs that sit at an offset
# inside wider rows, outputs that start out as poison. `cukernels.harness` draws such cases with
# hypothesis, runs your kernel on each, compares with a reference and, when something is wrong,
# shrinks to a minimal failing case that is rebuilt exactly from a handful of integers and a seed.
#
# The kernels here are real ones that run on this CPU (`cukernels/cpu_targets.py`), so the notebook
# needs no GPU; the CUDA kernels of this project are validated the same way (`refsim validate-kernels`):
#
# - **torch's int4 weight-only kernel** `torch._weight_int4pack_mm_for_cpu` (W4A16 with float32 x):
#   a float result, held to a stated error bound;
# - **`torch._int_mm`** (int8 x int8 -> int32): bit-exact, compared as integers.
#
# For each: the real kernel passes; a deliberately broken kernel, defined in this notebook, fails;
# we read the mismatch report and re-run exactly the failing case from its seed.

# %%
import math
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import seed as hseed
from hypothesis import strategies as st

from cukernels import cpu_targets, harness

CASES = 300  # per campaign: a few hundred cases, a few seconds each target on a 2-core machine
SEED = 1  # the campaign seed: the same seed and options draw the same cases
INT4_OPTIONS = {"max_mn": 8, "max_k": 256, "dtypes": ("float32",)}  # narrower than the default draw: fast
torch.set_num_threads(1)  # a shared machine; the bound holds for any summation order, so the verdict is the same
for name, tgt in cpu_targets.CPU_TARGETS.items():
    print(f"{name:<25} {tgt.description}")

# %% [markdown]
# ## The contract of the int4 target
#
# A target says which keyword arguments a kernel receives, which outputs it must produce, and what
# they must equal. One case, built from its `CaseParams`: the weight codes `q` (N x K, 0..15) are
# packed in torch's CPU int4pack layout; `scales_and_zeros` holds, per group of `group_size`
# channels, a scale `s` and a float zero, and the kernel's weight is `w = fl((q - 8) s + zero)`
# (tinygemm's fused form, one rounding). The reference is the exact sum of `x w` (`math.fsum` of
# exact float64 products) rounded once to float32, and the allowed error is, elementwise,
#
# $$|y_{\rm kernel} - y_{\rm exact}| \le \gamma_{K+1} \sum_k |x_k w_k|,\quad \gamma_n = \frac{nu}{1-nu},\ u = 2^{-24}.$$
#
# Why this bound holds for *any* correct float32 kernel: a dot product of K terms summed in any
# order, with or without fused multiply-adds, has a relative error per term of at most
# $\gamma_K$ (Higham, *Accuracy and Stability of Numerical Algorithms*, eq. 3.5); one more $u$
# covers rounding the exact value to float32 for the expected output. A kernel that sums in a
# different order passes; a kernel that drops, duplicates or mis-scales terms almost always
# fails, because a wrong term of a random x is typically far larger than the whole bound.

# %%
p0 = harness.CaseParams("torch_int4pack_mm", m=3, n=16, k=96, seed=42, group_size=32)
case0 = cpu_targets.CPU_TARGETS["torch_int4pack_mm"].build(p0)
for key, v in case0.inputs.items():
    print(f"input  {key:<17}", f"{v.dtype} {v.shape}" if isinstance(v, np.ndarray) else repr(v))
y0, bound0 = case0.expected["out"]
print("output out               float32", y0.shape, f"| bound from {bound0.min():.2g} to {bound0.max():.2g}")

# %% [markdown]
# ## Validate torch's int4 kernel
#
# `cpu_targets.validate(name)` runs the built-in adapter (it calls torch with contiguous copies,
# since the torch op ignores strides) on `CASES` drawn cases. The harness places every input as a
# view inside wider rows of junk and fills the outputs with a NaN poison, so a kernel that reads
# past a row or leaves an output unwritten fails.

# %%
def progress(n):
    if n % 100 == 0:
        print(f"  ... {n} cases", flush=True)


real4 = cpu_targets.validate("torch_int4pack_mm", max_examples=CASES, seed=SEED, progress=progress,
                             **INT4_OPTIONS)
print(real4.format())

# %% [markdown]
# The report says *no element of any case left the bound*, but not how close the kernel came to
# it. The harness does not keep per-element errors of a passing kernel (its `ValidationReport`
# holds only failures), and `cpu_targets.worst_bound_ratio` gives only the largest ratio; so here
# we draw the same kind of cases once more and keep every element's `|error| / bound`, which is
# what a person wants to look at.

# %%
def error_over_bound(kernel, target, cases, seed, **options):
    """Every output element's |kernel - exact| / bound, over ``cases`` drawn cases of a float target."""
    tgt = cpu_targets.CPU_TARGETS[target]
    ratios, worst = [], {"ratio": -1.0, "params": None}

    @settings(max_examples=cases, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @hseed(seed)
    @given(p=tgt.strategy(st, **options))
    def draw(p):
        case = tgt.build(p)  # contiguous inputs: here only the numbers are looked at, not the strides
        y, bound = case.expected["out"]
        got = np.asarray(kernel(**case.inputs), np.float64)
        r = np.abs(got - y.astype(np.float64)) / bound
        ratios.append(r.ravel())
        if r.max() > worst["ratio"]:
            worst.update(ratio=float(r.max()), params=p)

    draw()
    return np.concatenate(ratios), len(ratios), worst


t0 = time.perf_counter()
ratio4, n_cases4, worst4 = error_over_bound(cpu_targets.torch_int4pack_mm, "torch_int4pack_mm", CASES, SEED,
                                            **INT4_OPTIONS)
print(f"{n_cases4} cases, {ratio4.size} output elements, {time.perf_counter() - t0:.1f} s")
print(f"largest |error| / bound: {worst4['ratio']:.3g}  (median {np.median(ratio4):.2g}; "
      f"{np.mean(ratio4 == 0):.0%} of elements exactly the correctly rounded value)")
print("in the case", worst4["params"].describe())

# %% [markdown]
# ## A broken kernel: the last K group is dropped
#
# A classic tiling bug: the loop over K groups stops one group early (`for g in range(groups - 1)`).
# We build it as a wrapper around the real kernel that zeroes the activations of the last group,
# and validate it the same way.

# %%
def int4_drop_last_group(x, w_packed, scales_and_zeros, group_size, out=None):
    """torch's int4 kernel with the last group of K channels left out of the sum (the bug)."""
    x = torch.from_numpy(np.ascontiguousarray(x)).clone()
    x[:, -int(group_size):] = 0
    return cpu_targets.torch_int4pack_mm(x, w_packed, scales_and_zeros, group_size)


broken4 = cpu_targets.validate("torch_int4pack_mm", int4_drop_last_group, max_examples=CASES, seed=SEED,
                               **INT4_OPTIONS)
print(broken4.format(max_lines=5))

# %% [markdown]
# How to read it. The campaign stops at the first failing case, and hypothesis then *shrinks* it:
# smaller M, N, K, seed 0, no offsets, until the failure would go away. The last case in
# `failures` is that minimal one, and the report prints it: here one row, one block of 16 columns,
# and **K equal to one group**, so the kernel summed nothing at all and returned exactly 0.0 for
# every element: the clue points straight at the group loop. Each mismatch line gives the output
# element's index, the expected value (the exact sum rounded to float32), the received value and
# how far the error is beyond the bound.
#
# ## Reproduce the failing case from its seed
#
# `CaseParams` is everything that defines a case: the shape, the draw options and the PCG64 seed of
# the array contents. Running it again rebuilds the same arrays and gives the same mismatches.
# (The report's last line names `cukernels.harness.run_case`; that finds the target only while the
# CPU targets are registered, so use `cpu_targets.run_case`, or `harness.run_case` inside
# `with cpu_targets.registered():`.)

# %%
minimal4 = broken4.failures[-1]
print("reported  :", minimal4.params.describe())
again4 = cpu_targets.run_case(int4_drop_last_group, minimal4.params)
print(f"reproduced: ok={again4.ok}, {again4.mismatch_count} mismatching elements (reported "
      f"{minimal4.mismatch_count})")
for mm_rep, mm_new in list(zip(minimal4.mismatches, again4.mismatches, strict=True))[:3]:
    print(f"  out{list(mm_new.index)}: expected {mm_new.expected:.6g}, received {mm_new.received:.6g}"
          f"   (reported: out{list(mm_rep.index)}, {mm_rep.expected:.6g}, {mm_rep.received:.6g})")

# the real kernel passes on exactly that case: the failure is the kernel's, not the case's
real_on_minimal4 = cpu_targets.run_case(cpu_targets.torch_int4pack_mm, minimal4.params)
print("torch's kernel on the same case: ok =", real_on_minimal4.ok)

# %% [markdown]
# The same bug on a case with several groups: now only the last group's terms are missing, so the
# outputs are not zero, just wrong by far more than the bound allows.

# %%
p_multi = harness.CaseParams("torch_int4pack_mm", m=2, n=16, k=128, seed=7, group_size=32)
multi = cpu_targets.run_case(int4_drop_last_group, p_multi)
print(f"K = 4 groups: {multi.mismatch_count} of {2 * 16} elements outside the bound; first: "
      f"{multi.mismatches[0].bit_difference}")
case_m = cpu_targets.CPU_TARGETS["torch_int4pack_mm"].build(p_multi)
y_m, bound_m = case_m.expected["out"]
ratio_broken = (np.abs(np.asarray(int4_drop_last_group(**case_m.inputs), np.float64) - y_m) / bound_m).ravel()

# %% [markdown]
# The picture to look at: every element's error as a fraction of its bound, for torch's kernel over
# all drawn cases and for the broken kernel on the four-group case. A correct kernel sits left of
# the line at 1 (its elements that equal the correctly rounded sum, ratio 0, are drawn at the left
# edge), and how far left says how much headroom it has; the broken one sits orders of magnitude
# to the right of the line.

# %%
floor = 1e-4  # where exact results (ratio 0) are drawn, on the log axis
fig, ax = plt.subplots(figsize=(9, 3.6))
bins = np.logspace(math.log10(floor), 6, 60)
ax.hist(np.maximum(ratio4, floor), bins=bins, color="tab:blue", alpha=0.8,
        label=f"torch int4 kernel, {n_cases4} cases ({ratio4.size} elements)")
ax.hist(np.maximum(ratio_broken, floor), bins=bins, color="tab:red", alpha=0.8,
        label="last K group dropped, one case (32 elements)")
ax.axvline(1.0, color="k", lw=1.5, ls="--")
ax.text(1.2, ax.get_ylim()[1] * 0.6, "bound", fontsize=9)
ax.set(xscale="log", yscale="log", xlabel="|kernel - exact| / bound   (exact results at the left edge)",
       ylabel="output elements", title="W4A16 error against its bound")
ax.legend(fontsize=8, loc="upper right")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## A bit-exact target: `torch._int_mm`, and an int16 accumulator
#
# Integer GEMM has no excuse for rounding: int8 x int8 products summed in int32 are exact
# (|sum| <= K 2^14 < 2^31 for the K drawn here), so the harness compares the integers for equality,
# with `np.array_equal` on their bit patterns, and any difference is a failure.
#
# The broken variant keeps its accumulator in 16 bits, a wraparound bug that passes every test
# with short K or small values: the sum wraps modulo 2^16.

# %%
real8 = cpu_targets.validate("torch_int_mm", max_examples=CASES, seed=SEED, progress=progress)
print(real8.format())


def int_mm_int16_accumulator(a, b, out=None):
    """torch._int_mm with the sum kept in int16 (the bug): it wraps modulo 2^16."""
    return cpu_targets.torch_int_mm(a, b).to(torch.int16).to(torch.int32)


broken8 = cpu_targets.validate("torch_int_mm", int_mm_int16_accumulator, max_examples=CASES, seed=SEED)
print(broken8.format(max_lines=5))

# %% [markdown]
# The minimal case is a single output with a K just long enough for the sum to leave the int16
# range. For an integer target the report's *bit difference* is the XOR of the expected and
# received words: `0xffff0000`, the high half wrong and the low 16 bits right, is the signature
# of a 16-bit accumulator (received = expected - 2^16 here). Reproduced from its seed:

# %%
minimal8 = broken8.failures[-1]
mm8 = minimal8.mismatches[0]
again8 = cpu_targets.run_case(int_mm_int16_accumulator, minimal8.params)
print("reported  :", minimal8.params.describe())
print(f"  out{list(mm8.index)}: expected {mm8.expected}, received {mm8.received}, xor {mm8.bit_difference}; "
      f"expected - received = {mm8.expected - mm8.received}")
print(f"reproduced: ok={again8.ok}, out{list(again8.mismatches[0].index)}: expected {again8.mismatches[0].expected}"
      f", received {again8.mismatches[0].received}")
real_on_minimal8 = cpu_targets.run_case(cpu_targets.torch_int_mm, minimal8.params)
print("torch._int_mm on the same case: ok =", real_on_minimal8.ok)

# the case's own arrays, rebuilt from the seed: the exact sum, computed by hand
case8 = cpu_targets.CPU_TARGETS["torch_int_mm"].build(minimal8.params)
i, j = mm8.index
exact = int(np.dot(case8.inputs["a"][i].astype(np.int64), case8.inputs["b"][:, j].astype(np.int64)))
print(f"sum of a[{i}, :] * b[:, {j}] over K = {minimal8.params.k}: {exact}  (int16 range: -32768 .. 32767)")

# %% [markdown]
# ## What this notebook established (checked)

# %%
assert real4.ok and real4.cases_run == CASES, real4.format()
assert n_cases4 == CASES and 0 <= worst4["ratio"] <= 1.0, worst4
assert not broken4.ok and minimal4.mismatch_count > 0 and minimal4.error is None
assert minimal4.params.k == minimal4.params.group_size and all(mm.received == 0.0 for mm in minimal4.mismatches)


def triples(result):
    return [(mm.index, mm.expected, mm.received, mm.bit_difference) for mm in result.mismatches]


assert not again4.ok and again4.mismatch_count == minimal4.mismatch_count and triples(again4) == triples(minimal4)
assert real_on_minimal4.ok and not multi.ok and ratio_broken.max() > 1e3
assert real8.ok and real8.cases_run == CASES, real8.format()
assert not broken8.ok and mm8.bit_difference == "0xffff0000" and (mm8.expected - mm8.received) % 2**16 == 0
assert exact == mm8.expected and not -2**15 <= exact < 2**15
assert again8.mismatch_count == minimal8.mismatch_count and triples(again8) == triples(minimal8)
assert real_on_minimal8.ok
print("all checks passed")
