"""The prepared device run on CPU: the doc writer with fake figures, the worker split, the pass rule, the skips."""

import importlib.util
from pathlib import Path

import pytest

from cukernels import campaign, gpu_report
from cukernels.compile import gpu_available

FAKE_BENCH = {"device": "NVIDIA H200 (fake)", "date": "2026-12-01", "command": "python benchmarks/bench_kernels.py",
              "copy_bandwidth": 4.1e12, "copy_bytes": 1 << 30, "repeat": 15,
              "rows": [{"name": "W4A4", "shape": "8192^3, 8 clusters", "us": 1500.0, "baseline": "torch._int_mm",
                        "baseline_us": 1200.0, "ratio": 0.8, "target": ">= 0.7x _int_mm"},
                       {"name": "W4A16", "shape": "M=1, K=8192, N=28672", "us": 40.0, "baseline": "torch fp16 matmul",
                        "baseline_us": 110.0, "ratio": 2.75, "target": ">= 2.5x fp16"}]}
FAKE_CAMPAIGN = {t: {"cases": 12345, "failing": 0, "reports": [], "workers": 2} for t in campaign.CASE_COST}
FAKE_CAMPAIGN["_lost_workers"] = 0


def load_bench():
    """benchmarks/bench_kernels.py as a module (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location(
        "bench_kernels", Path(__file__).resolve().parents[1] / "benchmarks" / "bench_kernels.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_render_holds_date_device_command_and_every_figure():
    text = gpu_report.render(bench=FAKE_BENCH, campaign=FAKE_CAMPAIGN, tests_rc=0, command="make gpu-campaign",
                             seconds=401, date="2026-12-01")
    assert "Date 2026-12-01, device NVIDIA H200 (fake), command `make gpu-campaign` (401 s in all)." in text
    assert "| W4A4 | 8192^3, 8 clusters | 1500.0 | torch._int_mm | 1200.0 | 0.80x | >= 0.7x _int_mm |" in text
    assert "| W4A16 | M=1, K=8192, N=28672 | 40.0 | torch fp16 matmul | 110.0 | 2.75x | >= 2.5x fp16 |" in text
    assert "4.10 TB/s" in text and "| lowbit_gemm | 12345 | 0 |" in text and "passed" in text
    failed = gpu_report.render(bench=None, campaign=None, tests_rc=1, command="c", date="2026-12-01")
    assert "FAILED (exit 1)" in failed and "did not finish" in failed


def test_section_is_replaced_in_place_and_the_rest_kept(tmp_path):
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\nCPU figures.\n")
    gpu_report.write_section(doc, "first run\n")
    once = doc.read_text()
    assert once.startswith("# Benchmarks\n\nCPU figures.\n") and "first run" in once
    doc.write_text(once + "\nA later section.\n")
    gpu_report.write_section(doc, "second run\n")
    twice = doc.read_text()
    assert "first run" not in twice and "second run" in twice and twice.endswith("A later section.\n")
    assert twice.count(gpu_report.BEGIN) == 1 and twice.count(gpu_report.END) == 1
    with pytest.raises(ValueError, match="markers"):
        gpu_report.replace_section(gpu_report.BEGIN + "\nno end\n", "x")


@pytest.mark.parametrize("workers", [5, 6, 15, 31])
def test_workers_are_shared_by_case_cost(workers):
    split = campaign.assign_workers(workers)
    assert sum(split.values()) == workers and min(split.values()) >= 1
    if workers >= 15:
        assert split["lowbit_gemm"] == max(split.values())
    with pytest.raises(ValueError, match="at least 5"):
        campaign.assign_workers(4)


def test_campaign_passes_only_with_enough_cases_and_no_failure():
    assert campaign.campaign_ok(FAKE_CAMPAIGN)
    few = {**FAKE_CAMPAIGN, "sdr_gemm": {**FAKE_CAMPAIGN["sdr_gemm"], "cases": 9999}}
    assert not campaign.campaign_ok(few)
    bad = {**FAKE_CAMPAIGN, "wxa16": {**FAKE_CAMPAIGN["wxa16"], "failing": 1}}
    assert not campaign.campaign_ok(bad)
    assert not campaign.campaign_ok({**FAKE_CAMPAIGN, "_lost_workers": 1})
    # wxa16 is a float target: no case minimum
    assert campaign.campaign_ok({**FAKE_CAMPAIGN, "wxa16": {**FAKE_CAMPAIGN["wxa16"], "cases": 10}})


@pytest.mark.skipif(gpu_available(), reason="checks the no-GPU path")
def test_without_a_gpu_the_run_skips_and_writes_nothing(tmp_path, capsys):
    doc = tmp_path / "b.md"
    doc.write_text("keep\n")
    assert campaign.main(["--budget", "10", "--doc", str(doc)]) == campaign.SKIPPED
    assert doc.read_text() == "keep\n" and "skipped" in capsys.readouterr().out
    bench = load_bench()
    assert bench.main(["--json", str(tmp_path / "b.json")]) == 0
    assert "skipped" in capsys.readouterr().out and not (tmp_path / "b.json").exists()


def test_event_timer_takes_the_median_per_inner_call():
    bench = load_bench()
    ticks = iter([0.0, 1.0, 0.0, 3.0, 0.0, 2.0])

    class Ev:
        def record(self):
            self.t = next(ticks)

        def synchronize(self):
            pass

    calls = []
    t = bench.event_time(lambda: calls.append(1), repeat=3, inner=4,
                         events=lambda: (Ev(), Ev(), lambda a, b: b.t - a.t))
    assert t == 2.0 / 4 and len(calls) == 3 + 3 * 4


def test_the_multi_process_campaign_runs_numpy_kernels_and_catches_a_bug():
    """The orchestration of `make gpu-campaign` (spawned workers, deadline, queue, counts), rehearsed on CPU
    with the numpy kernels of tests/test_harness.py: a correct kernel passes; a crashing kernel, a kernel
    that cannot be loaded and a wrong one each fail their target with a report."""
    res = campaign.run_campaign(3, 4, chunk=5, xp="numpy", grace=300,
                                targets=("sdr_gemm", "sdr_encode", "wxa16", "ln_quant"),
                                kernels={"sdr_gemm": "test_harness:_sdr_gemm_numpy",
                                         "sdr_encode": "test_cukernels_report:_raises",
                                         "wxa16": "nosuch_module_xyz:f",
                                         "ln_quant": "test_cukernels_report:_off_by_one"})
    assert res["_lost_workers"] == 0
    assert res["sdr_gemm"]["cases"] >= 5 and res["sdr_gemm"]["failing"] == 0
    assert res["sdr_encode"]["failing"] == 1
    assert "crashed: the kernel raised TypeError" in res["sdr_encode"]["reports"][0]
    assert res["wxa16"]["failing"] == 1 and "worker 0 of wxa16 failed: UsageError" in res["wxa16"]["reports"][0]
    assert res["ln_quant"]["failing"] == 1
    assert not campaign.campaign_ok(res, min_cases=1)
    bad = campaign.run_campaign(1, 5, chunk=5, xp="numpy", grace=300, targets=("sdr_gemm",),
                                kernels={"sdr_gemm": "test_cukernels_report:_off_by_one"})
    assert bad["sdr_gemm"]["workers"] == 5 and bad["sdr_gemm"]["failing"] >= 1
    assert "bit difference" in bad["sdr_gemm"]["reports"][0]


def _raises(**kw):
    raise TypeError("bad operand")


def _off_by_one(**kw):
    """The right SDR GEMM plus one in every output (as the sdr_gemm target); anything else for another target."""
    from test_harness import _sdr_gemm_numpy

    if "out" not in kw:
        return None  # leaves the poisoned outputs: every element mismatches
    _sdr_gemm_numpy(**kw)
    kw["out"] += 1
