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
# # 4. Numerics: where ONNX, torch, TFLite, RPTQ and GPTQ disagree
#
# "Quantize x with scale s and zero point z" sounds like one formula, `q = clamp(round(x / s) + z)`.
# The libraries of the ecosystem compute it in different ways, and on some inputs the codes differ:
#
# | knob | choices | who |
# |---|---|---|
# | `scale_op` | `div`: `x / s`; `mul_recip`: `x * (1/s)` | ONNX, TFLite, GPTQ divide; torch multiplies |
# | `compute_dtype` | float32 or float16 | RPTQ quantizes fp16 activations in fp16 |
# | `rounding` | ties to even, ties away from zero, ... | TFLite: ties away (`std::round`); others: even |
# | `zero_point_stage` | `round(v) + z`, `round(v + z)`, one FMA | ONNX: z after rounding; torch: before |
#
# (torch's per-tensor quantizer is FBGEMM's AVX2 code: `x * (1/s) + z` in one fused multiply-add.)
#
# Every preset in `refsim.PRESETS` records these choices; `refsim.quantize` applies them exactly.
# This notebook uses those two names only.

# %%
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.patches import Patch

import refsim

NAMES = ["onnx", "torch", "torch_per_channel", "tflite", "rptq", "gptq"]
for name in NAMES:
    p = refsim.PRESETS[name]
    print(f"{name:<18} scale_op={p.scale_op.value:<9} compute={p.compute_dtype.value:<7} "
          f"rounding={p.rounding.value:<9} zero_point={p.zero_point_stage.value:<18} signed={p.signed}")


def codes(name, x, s, z=0, *, bits=8, axis=None):
    """Codes of x under a preset, on one common grid (unsigned 8-bit, as torch.quint8) so that only the
    arithmetic differs: GPTQ's unsigned codes and the signed presets' codes are the same grid shifted."""
    return refsim.quantize(np.asarray(x, np.float32), s, z, bits=bits, axis=axis,
                           spec=refsim.PRESETS[name].replace(signed=False))


# %% [markdown]
# ## Division against reciprocal: FBGEMM's example
#
# x = 0.273939937 and s = 0.00214854861, both float32. The exact quotient is 127.4999953..., just
# below the tie. Correctly rounded float32 division keeps it below: 127.49999, which rounds to 127.
# torch multiplies by `fl(1/s)`, and the product rounds to exactly 127.5, a tie, which goes to the
# even 128. One input, two libraries, two codes: a bit-exact accelerator must say which one it is.

# %%
x = np.float32(0.273939937)
s = np.float32(0.00214854861)
quotient = x / s
product = x * (np.float32(1) / s)
exact = float(np.float64(x) / np.float64(s))
print(f"exact x/s      = {exact:.10f}")
print(f"fl(x / s)      = {quotient!r}")
print(f"fl(x * fl(1/s)) = {product!r}")
fbgemm = {name: int(codes(name, [x], s)[0]) for name in NAMES}
print(fbgemm)

# %% [markdown]
# The staircase around that input: each preset's code as x moves across 20 float32 steps either side.
# The step from 127 to 128 sits at a different x for division and for the reciprocal, and for fp16
# compute (RPTQ) it is somewhere else again, because x itself is first rounded to fp16.

# %%
xs = (x + np.arange(-20, 21, dtype=np.float32) * np.spacing(x)).astype(np.float32)
fig, ax = plt.subplots(figsize=(9, 3.4))
for i, name in enumerate(["onnx", "torch", "tflite", "rptq"]):
    ax.step(np.arange(-20, 21), codes(name, xs, s) + 0.04 * i, where="mid", label=name)
ax.axvline(0, color="grey", lw=0.8, ls=":")
ax.set(xlabel="x, in float32 steps from 0.273939937", ylabel="code (offset slightly per preset)",
       title="Code near FBGEMM's example (s = 0.00214854861, z = 0)")
ax.legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Ties
#
# A tie is a quotient exactly half-way between two integers. Ties to even sends 0.5 to 0 and 2.5 to 2;
# ties away from zero (TFLite's `std::round`) sends them to 1 and 3, and -0.5 to -1. With s = 1 and
# z = 0 there is no other rounding on the way, so only the rounding rule differs.

# %%
ties = np.float32([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5])
tie_codes = {name: refsim.quantize(ties, np.float32(1), 0, bits=8, spec=refsim.PRESETS[name].replace(signed=True))
             for name in ["onnx", "tflite"]}
for name, q in tie_codes.items():
    print(f"{name:<7}", dict(zip(ties.tolist(), q.tolist(), strict=True)))

# %% [markdown]
# ## Zero point before or after rounding
#
# With ties to even, adding an odd zero point moves a tie to the other parity: `round(2.5) + 1 = 3`,
# but `round(2.5 + 1) = round(3.5) = 4`. ONNX adds z after rounding; torch's per-channel quantizer adds
# it before (and the fused AVX2 path, `torch`, rounds `x * (1/s) + z` once).

# %%
zp_rows = []
for z in range(4):
    row = {name: int(codes(name, [2.5], np.float32(1), z)[0]) for name in ["onnx", "torch_per_channel", "torch"]}
    zp_rows.append(row)
    print(f"x = 2.5, s = 1, z = {z}:", row)

# %% [markdown]
# ## A map: where, over a grid of inputs, which presets disagree
#
# Rows: 160 float32 scales between 0.001 and 0.01. Columns: a target quotient t from 100 to 108 in
# steps of 1/8, so every eighth column is a tie t = k + 1/2. The input is x = fl(t * s), and its
# colour says which presets give a code different from ONNX's (z = 1 in the right panel, an odd zero
# point). Away from the ties every preset in float32 agrees; at the ties the rounding rule (TFLite),
# the reciprocal (torch) and the zero point's place (torch per-channel, right) each move codes; fp16
# compute (RPTQ) moves codes everywhere near a half, since x in fp16 is only ~3 decimal digits.

# %%
scales = np.geomspace(0.001, 0.01, 160).astype(np.float32)
targets = np.arange(100, 108, 0.125)
X = (targets[None, :] * scales[:, None].astype(np.float64)).astype(np.float32)
OTHERS = ["torch", "torch_per_channel", "tflite", "rptq", "gptq"]


def disagreement(z):
    """Bit i of a cell is set when OTHERS[i]'s code differs from ONNX's at that input."""
    ref = codes("onnx", X, scales, z, axis=0)
    mask = np.zeros(X.shape, dtype=np.int64)
    for i, name in enumerate(OTHERS):
        mask |= (codes(name, X, scales, z, axis=0) != ref).astype(np.int64) << i
    return mask


maps = {z: disagreement(z) for z in (0, 1)}
present = sorted(set(np.unique(maps[0])) | set(np.unique(maps[1])))
label = {m: (" + ".join(n for i, n in enumerate(OTHERS) if m >> i & 1) or "all agree") for m in present}
palette = plt.get_cmap("tab10").colors
cmap = ListedColormap([(0.93, 0.93, 0.93)] + [palette[i % 10] for i in range(len(present) - 1)])
index = {m: i for i, m in enumerate(present)}

fig, axes = plt.subplots(1, 2, figsize=(13, 4.6), sharey=True)
for ax, z in zip(axes, (0, 1), strict=True):
    img = np.vectorize(index.get)(maps[z])
    ax.imshow(img, aspect="auto", cmap=cmap, vmin=-0.5, vmax=len(present) - 0.5, interpolation="nearest",
              extent=(targets[0] - 0.0625, targets[-1] + 0.0625, scales.size - 0.5, -0.5))
    ax.set(title=f"z = {z}: which presets differ from ONNX", xlabel="target quotient t (x = fl(t * s))")
axes[0].set_yticks(np.linspace(0, scales.size - 1, 5), [f"{v:.4f}" for v in scales[np.linspace(0, 159, 5).astype(int)]])
axes[0].set_ylabel("scale s")
fig.legend(handles=[Patch(color=cmap(index[m]), label=label[m]) for m in present], loc="lower center",
           ncol=min(4, len(present)), fontsize=8)
fig.tight_layout(rect=(0, 0.12, 1, 1))
plt.show()

for z, m in maps.items():
    counts = {label[v]: int(np.count_nonzero(m == v)) for v in present if np.count_nonzero(m == v)}
    print(f"z = {z}:", counts)

# %% [markdown]
# What to take away: at a tie, the code depends on the rounding rule, on division against
# reciprocal, and on whether the zero point is added before rounding; in fp16 it depends on much
# more. GPTQ's arithmetic is ONNX's (divide, float32, ties to even, zero point after), so on a common
# code grid it never differs; its codes are unsigned. A golden vector records the preset that made
# it (`manifest.json` `specs`), and refsim's `level 1` stimulus puts inputs exactly on these ties.

# %% [markdown]
# ## Checked

# %%
assert quotient < np.float32(127.5) and product == np.float32(127.5)          # the FBGEMM example, as stated
assert fbgemm["onnx"] == 127 and fbgemm["torch"] == 128 and fbgemm["tflite"] == 127 and fbgemm["gptq"] == 127
assert tie_codes["onnx"].tolist() == [-2, -2, 0, 0, 2, 2] and tie_codes["tflite"].tolist() == [-3, -2, -1, 1, 2, 3]
assert [r["onnx"] for r in zp_rows] == [2, 3, 4, 5] and [r["torch_per_channel"] for r in zp_rows] == [2, 4, 4, 6]
bit = {n: 1 << i for i, n in enumerate(OTHERS)}
off_tie = (np.arange(targets.size) % 8) != 4       # columns whose target quotient is not k + 1/2
for m in maps.values():
    float32_presets = bit["torch"] | bit["torch_per_channel"] | bit["tflite"] | bit["gptq"]
    assert not np.any(m[:, off_tie] & float32_presets), "float32 presets must agree away from ties"
    assert not np.any(m & bit["gptq"]), "GPTQ's arithmetic is ONNX's"
    assert np.any(m & bit["tflite"]) and np.any(m & bit["torch"]) and np.any(m & bit["rptq"])
assert np.any(maps[1] & bit["torch_per_channel"])
# with z = 0 adding the zero point before rounding changes nothing: per-channel torch is torch
assert np.array_equal(maps[0] & bit["torch"] != 0, maps[0] & bit["torch_per_channel"] != 0)
print("all checks passed")
