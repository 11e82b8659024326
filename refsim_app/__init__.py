"""The application layer: the ``refsim`` command, the demo and the pipelines that orchestrate the packages.

It sits above the reference (``refsim``), the libraries that use it (``golden``, ``hwmodel``,
``cukernels``) and their command front ends; nothing below imports it (import-linter contracts in
pyproject.toml, run by tests/test_layering.py).

- :mod:`refsim_app.cli`: the umbrella command, one subcommand per capability (``refsim --help``).
- :mod:`refsim_app.demo`: ``refsim demo``, the reference end to end, then a golden bundle.
- :mod:`refsim_app.spec`: ``refsim spec``, a preset's or a file's resolved numerics spec.
- :mod:`refsim_app.sdr`: ``refsim sdr``, QRazor SDR accumulator widths and SQNR.
- :mod:`refsim_app.calibrate`: ``refsim calibrate``, the RPTQ + GPTQ pipeline over a local OPT model
  (the library steps it runs stay in ``refsim.rptq``).
- :mod:`refsim_app.realdemo`: ``python -m refsim_app.realdemo``, per-cluster quantization on real
  activations (the computation stays in ``refsim.rptq.realdemo``).
- :mod:`refsim_app.corpus`: ``python -m refsim_app.corpus``, the Austen corpus check.
"""
