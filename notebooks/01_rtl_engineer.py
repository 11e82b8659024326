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
# # 1. RTL engineer: a golden bundle, your testbench, and a one-bit error found
#
# You are building the integer dot-product unit of a W4A4 accelerator: per RPTQ cluster, the sum of
# activation code times weight code with the zero points corrected,
# `isum = raw - zw*sum_a - za*sum_w + count*za*zw (mod 2^32)`. refsim gives you the vectors your
# testbench compares against, and tells you exactly where and by which bits your device is wrong.
#
# The steps: write a **golden bundle**; read it with **numpy** as the words your RTL sees; run the
# **Icarus Verilog** testbench of `examples/rtl/` on it; then plant a **one-bit error** in the
# device's output and read the report of **`refsim compare`**. (docs/golden.md is the reference.)

# %%
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

import golden
from golden.hexio import read_hex, words_from_array

ROOT = Path(os.environ.get("REFSIM_REPO") or Path.cwd().resolve().parent)  # the checkout (notebooks/..)
WORK = Path(tempfile.mkdtemp(prefix="refsim-rtl-"))  # everything this notebook writes goes here
print("checkout:", ROOT, "\nwork dir:", WORK)

# %% [markdown]
# ## Write a bundle
#
# `gemm_w4a4` at level 1 (*patterns*: zero, ones, extremes, alternating bits, every rounding tie)
# is a good first bundle: small (M=8, K=64, N=8, four clusters) and full of corner cases. The same
# preset, seed and level give byte-identical files on any machine. From the shell this is
# `refsim golden gemm_w4a4 --level 1 --out b1`.

# %%
bundle = golden.write_bundle("gemm_w4a4", WORK / "b1", level=1, seed=0)
manifest = json.loads((bundle / "manifest.json").read_text())
stages = {s["name"]: s for s in manifest["stages"]}
print(manifest["summary"])
print("shape", manifest["shape"], " config", manifest["config"])
print("activation spec:", {k: manifest["specs"]["act"]["spec"][k] for k in ("rounding", "scale_op", "acc_bits",
                                                                            "acc_overflow")})
print(f"\n{'stage':<13} {'role':<8} {'shape':<12} {'bits':>4} {'signed':<6} layout")
for s in manifest["stages"]:
    print(f"{s['name']:<13} {s['role']:<8} {str(s['shape']):<12} {s['word_bits']:>4} {str(s['signed']):<6} "
          f"{s['layout']}")

# %% [markdown]
# ## Read it with numpy
#
# Every stage is there twice: `NAME.npy` (numpy, exact dtype) and `NAME.hex` (`$readmemh`, one word
# a line). Line *i* of the hex is element *i* of the array in C order, as a `word_bits`-bit word:
# two's complement for signed stages. The dot unit's inputs are the 4-bit codes and the zero
# points; its outputs are checked against `isum_raw`, `a_sum`, `w_sum`, `cluster_size` and `isum`.

# %%
a_codes = np.load(bundle / "a_codes.npy")        # (M, K) signed 4-bit activation codes
w_codes = np.load(bundle / "w_codes.npy")        # (K, N) unsigned 4-bit weight codes
a_cluster = np.load(bundle / "a_cluster.npy")    # cluster of each K channel (contiguous)
isum = np.load(bundle / "isum.npy")              # (C, M, N) zero-point-corrected sums
print("a_codes", a_codes.dtype, a_codes.shape, "range", a_codes.min(), "..", a_codes.max())
print("isum   ", isum.dtype, isum.shape)

# the words an RTL memory holds: from the .npy by the stage's rule, and from the .hex as $readmemh reads it
e = stages["a_codes"]
hex_words = read_hex(bundle / e["hex"], word_bits=e["word_bits"])
print("a_codes[0, :6]   ", a_codes[0, :6], "-> words", [f"{w:x}" for w in hex_words[:6]])
assert np.array_equal(words_from_array(a_codes, e["word_bits"]).astype(np.uint64), hex_words)
print("first lines of isum.hex:", (bundle / "isum.hex").read_text().split()[:4])

# %% [markdown]
# A look at the stimulus: the activation codes, with the cluster boundaries (each cluster has its
# own scale and zero point), and the golden `isum` of cluster 0, the numbers the device must produce.

# %%
bounds = np.flatnonzero(np.diff(a_cluster)) + 0.5
fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 3.2), gridspec_kw={"width_ratios": [3, 1]})
im = ax0.imshow(a_codes, aspect="auto", cmap="coolwarm", vmin=-8, vmax=7, interpolation="nearest")
for b in bounds:
    ax0.axvline(b, color="k", lw=1)
ax0.set(title="a_codes (M x K), cluster boundaries in black", xlabel="channel k", ylabel="row m")
fig.colorbar(im, ax=ax0, label="code")
im1 = ax1.imshow(isum[0], cmap="viridis", interpolation="nearest")
ax1.set(title="golden isum, c = 0", xlabel="n", ylabel="m")
fig.colorbar(im1, ax=ax1)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Run the Icarus Verilog testbench
#
# `examples/rtl/tb_int_dot_zp.v` reads the `.hex` files with `$readmemh`, drives `int_dot_zp.v` one
# channel per clock and checks every output; `examples/rtl/run_tb.py` compiles it with the
# parameters from `manifest.json` (`python examples/rtl/run_tb.py b1`). The same unit with a
# deliberate one-bit error (`-DPLANT_RTL_BUG`, the low bit of `isum` flipped) must fail.
# Without Icarus (`apt-get install iverilog`) this cell says so and runs nothing; CI has it.

# %%
spec = importlib.util.spec_from_file_location("run_tb", ROOT / "examples" / "rtl" / "run_tb.py")
run_tb = importlib.util.module_from_spec(spec)
spec.loader.exec_module(run_tb)

have_iverilog = shutil.which("iverilog") is not None and shutil.which("vvp") is not None
if not have_iverilog and os.environ.get("REFSIM_REQUIRE_IVERILOG"):
    raise RuntimeError("REFSIM_REQUIRE_IVERILOG is set but iverilog/vvp are not on PATH")
if have_iverilog:
    rc_good, log_good = run_tb.run(bundle)
    print("correct RTL:      exit", rc_good, "|", log_good.strip().splitlines()[-1])
    rc_bug, log_bug = run_tb.run(bundle, defines=["PLANT_RTL_BUG"])
    print("planted RTL bug:  exit", rc_bug)
    print("\n".join(line for line in log_bug.splitlines() if "MISMATCH" in line or "FAIL" in line))
else:
    rc_good = rc_bug = None
    print("NOTE: iverilog is not installed here, so the testbench did not run (apt-get install iverilog)")

# %% [markdown]
# ## A one-bit error in the device's output, and `refsim compare`
#
# Your simulation dumps what the device produced, here `dut_isum.hex` (a `$readmemh`-style file;
# an `.npy` works too). We make one from the golden words and flip bit 3 of word 17, as a stuck
# wire or a wrong carry would. `refsim compare` reads the dump (comments, `_`, `@address` records
# are all accepted), and reports the first mismatches: flat index, position `[c, m, n]`, the
# expected and received words and their XOR; the count; exit status 1.

# %%
e = stages["isum"]
dut_words = read_hex(bundle / e["hex"], word_bits=e["word_bits"]).copy()
dut_words[17] ^= np.uint64(1 << 3)
dut = WORK / "dut_isum.hex"
dut.write_text("// isum as dumped by the device\n" + "\n".join(f"{int(w):08x}" for w in dut_words) + "\n")

cmp = subprocess.run([sys.executable, "-m", "refsim_app", "compare", str(bundle), "--stage", "isum", "--dut", str(dut)],
                     capture_output=True, text=True)
print("$ refsim compare b1 --stage isum --dut dut_isum.hex      (exit status", cmp.returncode, ")")
print(cmp.stdout)

# the same from Python, for a testbench that wants the numbers
result = golden.compare(bundle, "isum", dut)
m = result.first[0]
print(f"ok={result.ok} count={result.count}; first: index {m.index} at {list(m.position)}, xor {m.xor:#x}")

# %% [markdown]
# The picture a person looks for: expected against received, and where they differ.

# %%
expected = read_hex(bundle / e["hex"], word_bits=32).reshape(e["shape"])
received = dut_words.reshape(e["shape"])
xor = (expected ^ received)
fig, axes = plt.subplots(1, 4, figsize=(12, 2.8))
for c, ax in enumerate(axes):
    ax.imshow(xor[c] != 0, cmap="Reds", vmin=0, vmax=1, interpolation="nearest")
    ax.set_title(f"cluster {c}: words that differ")
    ax.set_xlabel("n")
    ax.set_ylabel("m")
fig.suptitle(f"isum: {int(np.count_nonzero(xor))} mismatching word, at {list(m.position)}, xor {m.xor:#x}")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## What this notebook established (checked)

# %%
assert (bundle / "manifest.json").is_file() and golden.verify_bundle(bundle).ok
assert cmp.returncode == 1 and "FAILED: 1 mismatching words" in cmp.stdout
assert not result.ok and result.count == 1 and m.index == 17 and tuple(m.position) == (0, 2, 1) and m.xor == 8
if have_iverilog:
    assert rc_good == 0 and "PASS:" in log_good, log_good
    assert rc_bug != 0 and "MISMATCH isum[" in log_bug, log_bug
print("all checks passed")
shutil.rmtree(WORK)  # the bundle, the dumps and the testbench logs were this notebook's own
