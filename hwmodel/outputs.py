"""Where ``refsim cost`` writes: plot files inside a directory the user names, and CSV table directories.

Plots (``--plot DIR``): DIR may be any directory (``docs/img``); refsim writes only the files
:data:`PLOT_NAMES` in it. Each PNG carries a text chunk ``Software: refsim cost`` (PNG spec, section
11.3.4: tEXt), so a later run recognises the files it wrote: a file of one of those names that is not
such a PNG (a user's file, a directory, a link) is refused before any work. The plots are rendered to
hidden temporary names inside DIR and renamed into place together at the end: a failed or interrupted
run leaves every earlier file as it was.

Tables (``--csv-dir DIR``): one CSV per table (:data:`CSV_TABLES`), in a directory made by
:func:`refsim.outputs.staged_output` (marker kind ``cost-csv``); an existing DIR is replaced only when
an earlier ``--csv-dir`` made it and ``--force`` is given.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import struct
import zlib
from pathlib import Path

from refsim.outputs import TMP_TAG, UsageError, file_mode

PLOT_NAMES = ("cost_memory.png", "cost_savings.png", "cost_roofline.png", "cost_pareto.png")
PNG_SOFTWARE = "refsim cost"
PNG_METADATA = {"Software": PNG_SOFTWARE}
CSV_KIND = "cost-csv"
#: file name -> what the table holds (``refsim cost --help``)
CSV_TABLES = {
    "summary.csv": "one row per configuration and stage: memory, throughput, energy",
    "layers.csv": "one row per configuration, stage and operation: ops, bytes, intensity, time",
    "tensors.csv": "one row per weight tensor: shape, copies, parameters",
    "sweep.csv": "one row per co-design point (with --sweep or --plot)",
}
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_text(path) -> dict[str, str]:
    """The tEXt chunks of a PNG file (keyword -> text); {} for a file that is not a readable PNG.

    Reads chunk by chunk (length, type, data, CRC; PNG spec section 5.3) up to the first IDAT: text
    that matplotlib writes comes before the image data."""
    out: dict[str, str] = {}
    try:
        with open(path, "rb") as f:
            if f.read(8) != _PNG_SIGNATURE:
                return {}
            while True:
                head = f.read(8)
                if len(head) < 8:
                    return out
                length, kind = struct.unpack(">I4s", head)
                if kind in (b"IDAT", b"IEND") or length > 1 << 20:
                    return out
                data = f.read(length)
                crc = f.read(4)
                if len(data) < length or len(crc) < 4 or struct.unpack(">I", crc)[0] != zlib.crc32(kind + data):
                    return out
                if kind == b"tEXt" and b"\0" in data:
                    key, text = data.split(b"\0", 1)
                    out[key.decode("latin-1")] = text.decode("latin-1")
    except OSError:
        return {}


def is_own_plot(path) -> bool:
    """True when ``path`` is a regular file (not a link) written by ``refsim cost --plot``."""
    p = Path(path)
    return p.is_file() and not p.is_symlink() and png_text(p).get("Software") == PNG_SOFTWARE


def check_plot_dir(directory, *, flag: str = "--plot") -> Path:
    """Check ``directory`` for the plots before any work; returns its absolute path.

    It may exist (any directory) or not (it is created, with its parents); each plot name in it must
    be free or hold a plot refsim wrote. Refused: a path that is a file or a link, a plot name taken
    by anything else, a location that cannot be written."""
    if directory is None or str(directory) == "":
        raise UsageError(f"{flag} needs a directory")
    path = Path(os.path.abspath(os.fspath(directory)))
    if path.is_symlink():
        raise UsageError(f"{flag} {directory} is a symbolic link; give the real directory")
    if path.exists():
        if not path.is_dir():
            raise UsageError(f"{flag} {directory} exists and is not a directory; refsim will not replace it")
        for name in PLOT_NAMES:
            p = path / name
            if (p.exists() or p.is_symlink()) and not is_own_plot(p):
                raise UsageError(f"{flag} {directory}: {name} exists and was not written by refsim cost "
                                 f"(no '{PNG_SOFTWARE}' PNG tag); refsim replaces only its own plots: "
                                 f"move it away or choose another directory")
        probe = path
    else:
        probe = path.parent
        while not probe.exists():
            probe = probe.parent
        if not probe.is_dir():
            raise UsageError(f"{flag} {directory}: {probe} is not a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} {directory}: {probe} is not writable")
    return path


@contextlib.contextmanager
def staged_plots(directory):
    """Yield ``temp(name) -> path`` for the plots; rename them all into ``directory`` on success.

    The temporary files are hidden siblings (``.cost_memory.tmp-PID-XXXX.png``: savefig takes the
    format from the extension). On any exception, Ctrl-C included, they are removed and no plot in
    ``directory`` changes."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tag = f"{TMP_TAG}{os.getpid()}-{secrets.token_hex(3)}"
    staged: dict[str, Path] = {}

    def temp(name: str) -> str:
        stem, ext = os.path.splitext(name)
        staged[name] = directory / f".{stem}{tag}{ext}"
        return str(staged[name])

    try:
        yield temp
        for tmp in staged.values():
            os.chmod(tmp, file_mode())
        for name, tmp in staged.items():
            os.replace(tmp, directory / name)
    finally:
        for tmp in staged.values():
            with contextlib.suppress(OSError):
                os.remove(tmp)
