"""Published perplexities for models that cannot run here, each row labelled with where it comes from.

``refsim sweep`` sets these next to what ``refsim eval`` measured, never in place of it: every row
carries ``source`` (``paper: RPTQ Table 1 (WikiText2)``), the dataset and the exact reference, and
the sweep draws a separate Pareto front for every source.

Included (each figure checked against its source, below):

* **OPT-66b, RPTQ** (Yuan et al., "RPTQ: Reorder-based Post-training Quantization for Large Language
  Models", arXiv 2304.01089): the perplexity table of the seven configurations W16A16 (FP16), W4A16,
  W4A8, W4A4, W4A4KV, W4A3KV, W3A3KV on WikiText2, PTB and C4. The figures were read from the
  authors' own copy of that table in their code's README (github.com/hahnyuan/RPTQ4LLM, README.md,
  "Results / Perplexity", commit 5d7a0140dd750f4bc53b159d413d5c40156a4318), which lists OPT-1.3b to
  OPT-66b; the paper's PDF was not readable from here, so its table number (Table 1, as this
  project's issues cite it) is taken on trust, the figures are not.

Left out, because no figure could be verified from here (none is invented):

* OPT-175b under RPTQ: the README's table stops at OPT-66b, and the paper's own Table 1 could not be read.
* LLaMA-2-7B under QRazor (arXiv 2501.13331): only the abstract was reachable (it quotes zero-shot
  accuracy gains, not perplexities).
"""

from __future__ import annotations

RPTQ_README = ("Yuan et al., RPTQ, arXiv 2304.01089, perplexity table as published in the authors' README "
               "(github.com/hahnyuan/RPTQ4LLM README.md, commit 5d7a014)")

#: dataset key -> the name the papers give it
DATASETS = {"wikitext2": "WikiText2", "ptb": "PTB", "c4": "C4"}

# OPT-66b columns WIKI, PT, C4 of the README's perplexity table, per configuration (FP16 = W16A16).
_RPTQ_OPT66B = {
    "W16A16": (9.34, 11.36, 10.28),
    "W4A16": (9.30, 11.42, 10.31),
    "W4A8": (9.23, 11.87, 10.58),
    "W4A4": (12.31, 18.32, 16.15),
    "W4A4KV": (9.75, 11.72, 10.62),
    "W4A3KV": (10.99, 15.23, 11.46),
    "W3A3KV": (11.59, 15.79, 11.81),
}


def _rows() -> list[dict]:
    rows = []
    for config, ppl in _RPTQ_OPT66B.items():
        for (key, name), value in zip(DATASETS.items(), ppl, strict=True):
            rows.append({"model": "opt-66b", "config": config, "perplexity": value, "tokens": None,
                         "dataset": key, "source": f"paper: RPTQ Table 1 ({name})", "reference": RPTQ_README})
    return rows


#: Every published row (a list of dicts: model, config, perplexity, tokens (None: not stated), dataset,
#: source, reference).
PAPER_ROWS: list[dict] = _rows()


def paper_rows(datasets=("wikitext2",)) -> list[dict]:
    """The published rows on the given datasets (keys of :data:`DATASETS`), as fresh dicts."""
    unknown = [d for d in datasets if d not in DATASETS]
    if unknown:
        raise ValueError(f"paper dataset {unknown[0]!r}: allowed {', '.join(DATASETS)}")
    return [dict(r) for r in PAPER_ROWS if r["dataset"] in datasets]
