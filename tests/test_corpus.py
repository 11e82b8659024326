"""refsim.corpus: the lazy-load framing on databases the tests write, and the real novels when fetched."""

from __future__ import annotations

import gzip
import struct
import zlib

import pytest

from refsim import corpus

pytest.importorskip("rdata")


# --- a minimal R serializer (XDR, format 3; R Internals "Serialization formats"), enough for the
# objects a lazy-load database of character vectors holds.

def _i(v):
    return struct.pack(">i", v)


UTF8_LEVEL = 1 << 3  # the CHARSXP's encoding bit (gp), R's UTF8_MASK
NIL = _i(254)  # NILVALUE_SXP


def r_char(s):
    if s is None:  # NA_character_
        return _i(9) + _i(-1)
    b = s.encode("utf-8")
    return _i(9 | UTF8_LEVEL << 12) + _i(len(b)) + b


def r_str(xs):
    return _i(16) + _i(len(xs)) + b"".join(r_char(x) for x in xs)


def r_ints(xs, sexptype=13):  # INTSXP; LGLSXP is 10
    return _i(sexptype) + _i(len(xs)) + b"".join(_i(x) for x in xs)


def r_named_list(items: dict):
    """VECSXP with a names attribute (flags bit 9), the attribute a tagged pairlist (bit 10)."""
    body = _i(19 | 1 << 9) + _i(len(items)) + b"".join(items.values())
    return body + _i(2 | 1 << 10) + _i(1) + r_char("names") + r_str(list(items)) + NIL


def r_serialize(obj):
    return b"X\n" + _i(3) + _i(0x40201) + _i(0x30500) + _i(5) + b"UTF-8" + obj


def write_db(root, objects: dict, *, compressed=1, references=None, corrupt=None):
    """A lazy-load database data/Rdata.rdb/.rdx under root holding ``objects`` {name: serialized}."""
    rdb, index = b"", {}
    for name, obj in objects.items():
        raw = r_serialize(obj)
        rec = struct.pack(">I", len(raw) + (1 if corrupt == "length" else 0)) + zlib.compress(raw)
        index[name] = r_ints([len(rdb), len(rec) + (50 if corrupt == "past_end" else 0)])
        rdb += rec
    refs = {k: r_ints([0, 1]) for k in (references or [])}
    rdx = r_named_list({"variables": r_named_list(index), "references": r_named_list(refs),
                        # TRUE (zlib) is a logical; 2 (bzip2) and 3 (xz) are integers, as makeLazyLoadDB stores them
                        "compressed": r_ints([compressed], 10 if compressed in (0, 1) else 13)})
    d = root / "data"
    d.mkdir(parents=True, exist_ok=True)
    (d / "Rdata.rdb").write_bytes(rdb)
    (d / "Rdata.rdx").write_bytes(gzip.compress(r_serialize(rdx)))
    return root


LINES = ["Emma", "", "by Jane Austen", "", "", "VOLUME I", "price \u00a35, caf\u00e9", ""]


def test_lines_read_back_exactly(tmp_path):
    root = write_db(tmp_path, {"emma": r_str(LINES), "persuasion": r_str(["other"])})
    assert corpus.austen_lines("emma", root=root) == LINES
    assert corpus.austen_lines("persuasion", root=root) == ["other"]


def test_join_rule_is_writelines():
    assert corpus.join_lines(["a", "", "b"]) == "a\n\nb\n"
    assert corpus.join_lines([]) == ""
    assert corpus.join_lines([""]) == "\n"


def test_text_with_another_sha256_is_refused(tmp_path):
    root = write_db(tmp_path, {"emma": r_str(LINES)})
    with pytest.raises(ValueError, match="sha256 .* not the pinned"):
        corpus.austen_novel("emma", root=root)


def test_na_line_is_refused(tmp_path):
    root = write_db(tmp_path, {"emma": r_str(["a", None])})
    with pytest.raises(ValueError, match="element 2 is NA"):
        corpus.austen_lines("emma", root=root)


def test_not_a_character_vector_is_refused(tmp_path):
    root = write_db(tmp_path, {"emma": r_ints([1, 2])})
    with pytest.raises(ValueError, match="not a character vector"):
        corpus.austen_lines("emma", root=root)


@pytest.mark.parametrize("kw, match", [
    (dict(compressed=2), "only zlib"),
    (dict(compressed=0), "only zlib"),
    (dict(references=["env::1"]), "environment references"),
    (dict(corrupt="length"), "its header says"),
    (dict(corrupt="past_end"), "past the end"),
])
def test_bad_databases_are_refused(tmp_path, kw, match):
    root = write_db(tmp_path, {"emma": r_str(LINES)}, **kw)
    with pytest.raises(ValueError, match=match):
        corpus.austen_lines("emma", root=root)


def test_absent_object_and_unknown_name(tmp_path):
    root = write_db(tmp_path, {"persuasion": r_str(["x"])})
    with pytest.raises(ValueError, match="has no object 'emma'"):
        corpus.austen_lines("emma", root=root)
    with pytest.raises(ValueError, match="novel='ulysses' is not known; allowed: sensesensibility"):
        corpus.austen_lines("ulysses", root=root)


def test_missing_data_names_make_realmodel(tmp_path, monkeypatch):
    monkeypatch.setenv(corpus.DATA_ENV, str(tmp_path))
    with pytest.raises(corpus.CorpusMissing, match="make realmodel"):
        corpus.austen_novel("emma")
    from refsim_app.corpus import main

    assert main(["--check"]) == 2


# --- the real novels (skipped until `make realmodel` has fetched them)

def _have_real():
    return (corpus.janeaustenr_dir() / "data" / "Rdata.rdb").is_file()


real = pytest.mark.skipif(not _have_real(), reason="the Austen novels are not fetched (make realmodel)")


@real
@pytest.mark.parametrize("name", list(corpus.NOVELS))
def test_real_novel_matches_its_pin(name):
    text = corpus.austen_novel(name)  # raises unless the sha256 matches
    assert corpus.sha256_text(text) == corpus.SHA256[name]
    assert text.split("\n", 1)[0].upper() == corpus.NOVELS[name].upper().replace("&", "AND")  # the title line


@real
def test_real_persuasion_opening():
    lines = corpus.austen_lines("persuasion")
    assert lines[:8] == ["Persuasion", "", "", "by", "", "Jane Austen", "", "(1818)"]
    assert len(lines) == 8328
