"""Co-design sweep: refsim error figures, Pareto fronts, and the same results on a local Dask cluster."""

import math

import numpy as np
import pytest
from strategies import sdr_spec

import hwmodel.sweep as hs
from hwmodel.calib import load_calibration, synthetic_calibration
from hwmodel.errors import combine_sqnr_db, measure_error
from hwmodel.sweep import compute_costs, default_grid, pareto_mask, run_sweep, small_grid


@pytest.fixture(scope="module")
def calib():
    return synthetic_calibration(0, tokens=128, channels=128, out=64, kv_channels=64)


def err(calib, **p):
    return measure_error(p, calib)


def test_rptq_error_falls_with_bits_and_clusters(calib):
    a3, a4, a8 = (err(calib, method="rptq", w_bits=16, a_bits=a, kv_bits=16, clusters=8)["sqnr_x_db"]
                  for a in (3, 4, 8))
    assert a3 + 3 < a4 and a4 + 15 < a8  # ~6 dB per bit
    c1, c16 = (err(calib, method="rptq", w_bits=16, a_bits=4, kv_bits=16, clusters=c)["sqnr_x_db"]
               for c in (1, 16))
    assert c16 > c1 + 3  # reorder-based clustering is the point of RPTQ on uneven channel ranges
    w = err(calib, method="rptq", w_bits=4, a_bits=16, kv_bits=16, clusters=1)
    assert math.isinf(w["sqnr_x_db"]) and math.isinf(w["sqnr_k_db"]) and w["sqnr_db"] == w["sqnr_y_db"]


def test_qrazor_error_falls_with_smaller_groups(calib):
    g = {n: err(calib, method="qrazor", w_bits=4, a_bits=4, kv_bits=4, group=n) for n in (16, 128)}
    assert g[16]["sqnr_x_db"] > g[128]["sqnr_x_db"] + 1
    assert g[16]["sqnr_k_db"] > g[128]["sqnr_k_db"] + 1
    with pytest.raises(ValueError, match="qrazor w_bits must be 2..8"):
        err(calib, method="qrazor", w_bits=12, a_bits=4, kv_bits=4, group=16)
    with pytest.raises(ValueError, match="method must be one of"):
        err(calib, method="awq", w_bits=4, a_bits=4, kv_bits=4)


def test_error_matches_refsim_directly(calib):
    import refsim

    s = refsim.absmax_params(calib.x, bits=16, spec=refsim.preset("qrazor"))
    q = refsim.quantize(calib.x, s, bits=16, spec=refsim.preset("qrazor"))
    codes, flags = refsim.sdr_encode(q, group_size=32, base_bits=16, keep=3, spec=sdr_spec())
    xh = refsim.dequantize(refsim.sdr_decode(codes, flags, group_size=32), s)
    e = err(calib, method="qrazor", w_bits=8, a_bits=4, kv_bits=8, group=32)
    assert e["sqnr_x_db"] == refsim.sqnr_db(calib.x, xh)


def test_combine_and_pareto():
    assert combine_sqnr_db(20.0, 20.0) == pytest.approx(20 - 10 * np.log10(2))
    assert combine_sqnr_db(float("inf"), 30.0) == 30.0 and math.isinf(combine_sqnr_db(float("inf")))
    cost = np.array([1.0, 2.0, 2.0, 3.0, 1.0])
    neg_q = np.array([-1.0, -3.0, -2.0, -3.0, -1.0])
    assert pareto_mask(cost, neg_q).tolist() == [True, True, False, False, True]


def test_grid_and_costs():
    pts = default_grid()
    assert len(pts) == 264 and len({tuple(sorted(p.items())) for p in pts}) == 264
    qr = hs.point_config({"method": "qrazor", "w_bits": 4, "a_bits": 4, "kv_bits": 8, "group": 32})
    assert qr.kv_sdr_group == 0 and qr.a_sdr_group == 32
    c = compute_costs(small_grid(), "opt-6.7b", "H200", batch=4, seq=1024)
    assert all(len(v) == 12 for v in c.values())
    assert np.all(c["memory_gib"] > 0) and np.all(c["decode_tokens_per_s"] > 0)


def test_calibration_file_roundtrip(tmp_path, calib):
    path = tmp_path / "calib.npz"
    np.savez(path, x=calib.x, w=calib.w, k=calib.k)
    loaded = load_calibration(path)
    assert np.array_equal(loaded.x, calib.x) and loaded.source == "calib.npz"
    np.savez(tmp_path / "bad.npz", x=calib.x)
    with pytest.raises(ValueError, match=r"lacks arrays \['w', 'k'\]"):
        load_calibration(tmp_path / "bad.npz")


def test_sweep_on_local_dask_cluster_equals_inline(calib):
    pytest.importorskip("distributed")
    from distributed import LocalCluster

    pts = small_grid()
    kw = dict(batch=8, seq=2048, points=pts, calib=calib, progress=False)
    inline = run_sweep("opt-13b", "H200", scheduler="inline", **kw)
    local = run_sweep("opt-13b", "H200", scheduler=None, n_workers=2, **kw)  # a new LocalCluster
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cluster:
        # as --scheduler ADDRESS does
        remote = run_sweep("opt-13b", "H200", scheduler=cluster.scheduler_address, **kw)
    assert inline.rows == local.rows == remote.rows
    # rows come back in point order
    assert [r["label"] for r in local.rows] == [hs.point_label(p) for p in pts]
    front = [r for r in inline.rows if r["pareto_memory"]]
    assert 0 < len(front) < len(pts)
    # the front is monotone: more memory buys more SQNR
    front.sort(key=lambda r: r["memory_gib"])
    assert all(a["sqnr_db"] < b["sqnr_db"] for a, b in zip(front, front[1:], strict=False))
