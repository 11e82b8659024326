"""cocotb benches of examples/rtl's units against a golden bundle read with numpy.

The same checks as the ``$readmemh`` testbenches (``tb_int_dot_zp.v``, ``tb_sdr_group_encoder.v``),
written as a cocotb team writes them: the stimulus and the expected results come from the bundle's
``.npy`` files, each converted to the memory words the RTL sees by the stage's own rule in
``manifest.json`` (two's complement or sign-magnitude in ``word_bits``; bundle.py, numpy only), and
every result is compared word for word as it comes out.

Run by ``run_cocotb.py`` (cocotb's Python runner), which sets two environment variables:
``REFSIM_BUNDLE`` (the bundle directory) and ``REFSIM_INSTANCE`` (the instance of
``refsim_units.v`` whose parameters match the bundle, e.g. ``dot_b4``). Each bench logs the first
ten mismatches as ``MISMATCH stage[index] ...: expected .., received .., xor ..``, then fails with
``FAIL: n of m checks mismatch``, or logs ``PASS: m checks``.
"""

from __future__ import annotations

import os

import cocotb
import numpy as np
from bundle import Bundle
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, Timer

MAX_REPORT = 10


class Ports:
    """The ports of one instance of refsim_units.v: ``ports.a`` is the top's ``<instance>_a``."""

    def __init__(self, dut, instance: str):
        self._dut, self._instance = dut, instance
        if not hasattr(dut, f"{instance}_{'flag' if instance.startswith('sdr') else 'isum'}"):
            raise ValueError(f"REFSIM_INSTANCE={instance!r}: refsim_units.v has no such instance")

    def __getattr__(self, port):
        return getattr(self._dut, f"{self._instance}_{port}")


class Checker:
    """Counts checks; logs the first mismatches in the testbenches' format."""

    def __init__(self, log):
        self.log, self.checks, self.errors = log, 0, 0

    def check(self, stage: str, index: int, where: str, received, expected: int) -> None:
        self.checks += 1
        got = int(received)  # a value with x/z bits raises here: an unknown is never a match
        if got != expected:
            self.errors += 1
            if self.errors <= MAX_REPORT:
                self.log.error(f"MISMATCH {stage}[{index}] ({where}): expected {expected:#x}, received {got:#x}, "
                               f"xor {expected ^ got:#x}")

    def finish(self) -> None:
        assert self.errors == 0, f"FAIL: {self.errors} of {self.checks} checks mismatch"
        self.log.info(f"PASS: {self.checks} checks")


def _setup(dut):
    bundle = Bundle(os.environ["REFSIM_BUNDLE"])
    return bundle, Ports(dut, os.environ["REFSIM_INSTANCE"]), Checker(dut._log)


@cocotb.test()
async def int_dot_zp_matches_bundle(dut):
    """int_dot_zp against gemm_w4a4 / gemm_w3a3: raw, sum_a, sum_w, count and isum of every (c, m, n).

    One output at a time, as tb_int_dot_zp.v drives it: on a falling edge ``clear`` with the zero
    points, then the channels of cluster c one per clock with ``valid``; the registered sums and the
    combinational isum = raw - zw*sum_a - za*sum_w + count*za*zw (mod 2^32) are read after the last.
    """
    b, p, chk = _setup(dut)
    qa, qw, za, zw = (b.words(s) for s in ("a_codes", "w_codes", "a_zero", "w_zero"))
    cluster = b.array("a_cluster")
    want = {s: b.words(s) for s in ("isum_raw", "isum", "a_sum", "w_sum", "cluster_size")}
    c_count, m_count, n_count = b.shape("isum")
    k_count = b.shape("a_codes")[1]
    channels = [np.nonzero(cluster == c)[0].tolist() for c in range(c_count)]
    cocotb.start_soon(Clock(dut.clk, 10, units="ns").start())
    fall = FallingEdge(dut.clk)
    p.valid.value = 0
    for c in range(c_count):
        for m in range(m_count):
            for n in range(n_count):
                await fall
                p.clear.value, p.za.value, p.zw.value = 1, int(za[c]), int(zw[n])
                await fall
                p.clear.value = 0
                for k in channels[c]:
                    p.a.value, p.w.value, p.valid.value = int(qa[m * k_count + k]), int(qw[k * n_count + n]), 1
                    await fall
                p.valid.value = 0
                i = (c * m_count + m) * n_count + n
                where = f"c={c} m={m} n={n}"
                chk.check("isum_raw", i, where, p.raw.value, int(want["isum_raw"][i]))
                chk.check("isum", i, where, p.isum.value, int(want["isum"][i]))
                chk.check("a_sum", c * m_count + m, where, p.sum_a.value, int(want["a_sum"][c * m_count + m]))
                chk.check("w_sum", c * n_count + n, where, p.sum_w.value, int(want["w_sum"][c * n_count + n]))
                chk.check("cluster_size", c, where, p.count.value, int(want["cluster_size"][c]))
    chk.finish()


@cocotb.test()
async def sdr_group_encoder_matches_bundle(dut):
    """sdr_group_encoder against an SDR encode bundle: the flag and the G codes of every group.

    Element i of a group goes to x[i*B +: B] as its B-bit two's complement word; code i comes out
    of codes[i*(KEEP+1) +: KEEP+1] as a sign-magnitude word, compared with sdr_codes' word.
    """
    b, p, chk = _setup(dut)
    cfg = b.manifest["config"]
    g, bits, keep = cfg["group_size"], cfg["base_bits"], cfg["keep"]
    base, codes, flags = b.words("base_int"), b.words("sdr_codes"), b.words("sdr_flags")
    rows, d = b.shape("base_int")
    groups = d // g
    code_mask = (1 << (keep + 1)) - 1
    for r in range(rows):
        for j in range(groups):
            first = r * d + j * g
            p.x.value = sum(int(base[first + i]) << (i * bits) for i in range(g))
            await Timer(1, units="ns")
            where = f"row {r} group {j}"
            chk.check("sdr_flags", r * groups + j, where, p.flag.value, int(flags[r * groups + j]))
            out = int(p.codes.value)
            for i in range(g):
                chk.check("sdr_codes", first + i, where, (out >> (i * (keep + 1))) & code_mask, int(codes[first + i]))
    chk.finish()
