"""Real English text, offline: Jane Austen's six novels from the R package janeaustenr.

    python -m refsim_app.corpus --check        # every novel: lines, characters, sha256 against the pin
    python -m refsim_app.corpus --text emma    # one novel's text on stdout

Source: the Debian package ``r-cran-janeaustenr`` (1.0.0-1; the CRAN package by Julia Silge,
texts from Project Gutenberg, public domain), fetched by ``make realmodel`` into
``$REFSIM_DATA/janeaustenr`` (default: ``data/`` at the repository root). No R is needed.

**The container (R lazy-load data).** ``data/Rdata.rdx`` is a gzip-compressed RDS (an R
serialization) of ``list(variables=, references=, compressed=)``: ``variables`` maps each object
name to an integer pair (byte offset, byte length) in ``data/Rdata.rdb``. Each record there is a
4-byte big-endian uncompressed length followed by a zlib stream (``compressed = TRUE``; the
bzip2/xz forms, which add a type byte, are refused) holding one R serialization (``X\\n`` XDR,
format 2 or 3). R's own reader is ``lazyLoadDBfetch`` (src/main/serialize.c, R_decompress1). The
serializations are parsed by the ``rdata`` package (``rdata.parser.parse_data``); only the framing
above is ours. A record with environment references (``references`` non-empty) is refused: the
novels are plain character vectors.

**The text.** Each novel is a character vector with one element per line of the Gutenberg text
(``""`` for a blank line); ``austen_books()`` stacks these same vectors, blank lines included,
into its ``text`` column (``unlist(books)``), one row per line. The text of a novel is what
R's ``writeLines(x)`` writes: every element followed by ``"\\n"``, i.e. ``"\\n".join(lines) + "\\n"``,
blank lines kept, in UTF-8. Its sha256 is pinned in ``SHA256``; a text that differs (another
package version) is refused.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
import zlib
from pathlib import Path

# object name in the R package -> title (the order of austen_books()'s factor levels)
NOVELS = {
    "sensesensibility": "Sense & Sensibility",
    "prideprejudice": "Pride & Prejudice",
    "mansfieldpark": "Mansfield Park",
    "emma": "Emma",
    "northangerabbey": "Northanger Abbey",
    "persuasion": "Persuasion",
}

# sha256 of austen_novel(name).encode("utf-8"), from r-cran-janeaustenr 1.0.0-1
SHA256 = {
    "sensesensibility": "105e1651fe93bed7130078578efd31e0c557d68667ba672ddc876f735b30fe09",
    "prideprejudice": "dfc684d4f857fa938268f9ab9c5567b64bd0691251eca959644adeabe6287a4d",
    "mansfieldpark": "98bc90519cdf4ef663ad7de2734bb529435ef24f7abbde6bb1a50898871dafe9",
    "emma": "7c67b5985c6d0de1efaeb5d342d52cb82c38083c40e2295129e30e87ee690ebe",
    "northangerabbey": "51f91bbe0517db8e65cff009b097ce0a1836124c4e0532ac19e6c0cad982abed",
    "persuasion": "8061549557aebd2fd6e353d18d9197cb707029112bd52d4d8b174583a925848a",
}

DATA_ENV = "REFSIM_DATA"
_FETCH = "run `make realmodel` (it fetches r-cran-janeaustenr into data/janeaustenr)"


def data_dir() -> Path:
    """$REFSIM_DATA, else the ``data`` folder at the repository root (where ``make realmodel`` puts it)."""
    env = os.environ.get(DATA_ENV)
    return Path(env) if env else Path(__file__).resolve().parent.parent / "data"


def janeaustenr_dir() -> Path:
    return data_dir() / "janeaustenr"


class CorpusMissing(FileNotFoundError):
    """The janeaustenr data is not on this machine (``make realmodel`` fetches it)."""


def _record(rdb: bytes, offset: int, length: int, name: str) -> bytes:
    """The decompressed R serialization stored at rdb[offset : offset + length]."""
    chunk = rdb[offset:offset + length]
    if len(chunk) != length or length < 4:
        raise ValueError(f"lazy-load record {name!r}: offset {offset} + length {length} lies past the "
                         f"end of the .rdb ({len(rdb)} bytes)")
    (expect,) = struct.unpack(">I", chunk[:4])
    raw = zlib.decompress(chunk[4:])
    if len(raw) != expect:
        raise ValueError(f"lazy-load record {name!r}: inflated to {len(raw)} bytes, its header says {expect}")
    return raw


def _quiet_parse(raw: bytes):
    import warnings

    import rdata

    with warnings.catch_warnings():  # rdata warns that a bare serialization (no RDS/RDA magic) is assumed RDS
        warnings.simplefilter("ignore", UserWarning)
        return rdata.parser.parse_data(raw).object


def lazyload_index(rdx_path) -> dict:
    """{name: (offset, length)} of the records of an R lazy-load database, from its .rdx."""
    import rdata

    index = rdata.conversion.convert(_quiet_parse(gzip.decompress(Path(rdx_path).read_bytes())))
    for key in ("variables", "references", "compressed"):
        if key not in index:
            raise ValueError(f"{rdx_path}: not a lazy-load index (no {key!r} entry)")
    if len(index["references"]):
        raise ValueError(f"{rdx_path}: the database holds environment references; only plain data is read")
    compressed = list(index["compressed"])
    if compressed != [True]:
        raise ValueError(f"{rdx_path}: compressed={compressed}; only zlib records (TRUE) are read")
    return {str(name): tuple(int(v) for v in pos) for name, pos in index["variables"].items()}


def read_lazyload(rdb_path, rdx_path, names=None) -> dict:
    """{name: parsed R object (``rdata`` RObject)} for the variables ``names`` (default all) of a
    lazy-load database."""
    index = lazyload_index(rdx_path)
    names = list(index) if names is None else list(names)
    missing = [n for n in names if n not in index]
    if missing:
        raise ValueError(f"{rdx_path} has no object {missing[0]!r} (it holds {', '.join(sorted(index))})")
    rdb = Path(rdb_path).read_bytes()
    return {n: _quiet_parse(_record(rdb, *index[n], n)) for n in names}


def character_vector(obj, name: str) -> list[str]:
    """The elements of an R character vector (STRSXP) as Python strings; NA is refused."""
    from rdata.parser import RObjectType

    if obj.info.type != RObjectType.STR:
        raise ValueError(f"R object {name!r} is a {obj.info.type.name}, not a character vector")
    lines = []
    for i, ch in enumerate(obj.value):
        if ch.value is None:
            raise ValueError(f"R object {name!r}: element {i + 1} is NA")
        lines.append(ch.value.decode("utf-8") if isinstance(ch.value, bytes) else str(ch.value))
    return lines


def join_lines(lines) -> str:
    """R's writeLines(lines): each line followed by a newline."""
    return "".join(line + "\n" for line in lines)


def _check_name(name) -> str:
    if name not in NOVELS:
        raise ValueError(f"novel={name!r} is not known; allowed: {', '.join(NOVELS)}")
    return name


def austen_lines(name: str, *, root=None) -> list[str]:
    """The lines of one novel (``NOVELS`` names it), as the R package stores them."""
    _check_name(name)
    base = Path(root) if root is not None else janeaustenr_dir()
    rdb, rdx = base / "data" / "Rdata.rdb", base / "data" / "Rdata.rdx"
    if not (rdb.is_file() and rdx.is_file()):
        raise CorpusMissing(f"the Austen novels are not here ({rdb} missing); {_FETCH}")
    return character_vector(read_lazyload(rdb, rdx, [name])[name], name)


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def austen_novel(name: str, *, root=None) -> str:
    """One novel's text (``join_lines`` of its lines), checked against its pinned sha256."""
    text = join_lines(austen_lines(name, root=root))
    got, want = sha256_text(text), SHA256[name]
    if got != want:
        raise ValueError(f"the text of {name!r} has sha256 {got}, not the pinned {want} (r-cran-janeaustenr "
                         f"1.0.0-1); another package version? {_FETCH}")
    return text
