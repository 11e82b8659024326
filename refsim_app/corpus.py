"""``python -m refsim_app.corpus``: check the Austen corpus, or print one novel (library: refsim.corpus).

    python -m refsim_app.corpus --check            # every novel: lines, characters, sha256 against the pin
    python -m refsim_app.corpus --text emma        # one novel's text on stdout
"""

from __future__ import annotations

import argparse
import sys

from refsim.corpus import NOVELS, CorpusMissing, austen_novel, sha256_text
from refsim_cli import UsageError, run_command


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m refsim_app.corpus", description=__doc__.split("\n\n")[0])
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--check", action="store_true", help="check every novel against its pinned sha256")
    g.add_argument("--text", metavar="NOVEL", choices=tuple(NOVELS), help="print one novel: " + ", ".join(NOVELS))
    a = p.parse_args(argv)

    def go(a):
        try:
            return _report(a)
        except CorpusMissing as exc:  # one line naming make realmodel, not an OS error
            raise UsageError(str(exc)) from None

    def _report(a):
        if a.text:
            sys.stdout.write(austen_novel(a.text))
            return 0
        for name, title in NOVELS.items():
            text = austen_novel(name)
            print(f"{name:18s} {title:20s} {text.count(chr(10)):6d} lines {len(text):8d} chars "
                  f"sha256 {sha256_text(text)[:16]}... ok")
        return 0

    return run_command(go, a, "corpus")


if __name__ == "__main__":
    raise SystemExit(main())
