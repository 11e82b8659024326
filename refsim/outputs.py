"""Outputs and errors the library shares with every command: checked, staged, atomic outputs.

This is the library half of what used to be ``refsim/cliutil.py``. It holds what a library
function needs when it writes or refuses something (``refsim.rptq.model_io`` saves a quantized
model, ``golden.bundle`` writes a bundle), so the reference can import it; the command-line half
(argparse types, :func:`refsim_cli.run_command`, exit statuses, the ``--preset/--spec`` options)
lives in the package :mod:`refsim_cli`, which the reference never imports (tests/test_layering.py).

The rules (README.md, "Use"):

- **A refused input is one exception**: :class:`UsageError` carries a one-line message naming the
  argument as typed and the allowed values; a command front end prints it as
  ``refsim CMD: error: MESSAGE`` with exit status 2 (:func:`refsim_cli.run_command`).
- **An output is replaced only when it is the command's own**: a directory holding the marker
  file :data:`MARKER` that a refsim command wrote there, listing every file it wrote (a golden
  bundle is recognised by its manifest instead), and nothing else: a user's file added later
  makes it foreign. Anything else (a user's directory, a plain file, the current directory) is
  refused whatever flag is given. An output equal to, inside, or containing an input is refused.
  All of this, the writability of the location (tried, not only permission bits) and the free
  disk against the estimated size, is checked by :func:`check_output` *before* any compute;
  :func:`check_memory` refuses a size whose working memory exceeds what is available.
- **Outputs are staged**: :func:`staged_output` builds the output in a sibling temporary
  directory ``.NAME.tmp-PID-XXXX`` and renames it into place; a killed run leaves at most that
  temporary directory, which the next run for the same output removes (it carries the marker
  and the dead process's pid). Directories and files follow the umask. :func:`atomic_write_text`
  does the same for one file.
- **Optional extras** are checked by :func:`require_extra` before any work: one line naming the
  extra to install.
- **JSON is strict**: :func:`to_json` writes NaN and +-Inf as null.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import os
import secrets
import shutil
from pathlib import Path

MARKER = ".refsim-output.json"
TMP_TAG = ".tmp-"
OLD_TAG = ".old-"


class UsageError(Exception):
    """A bad argument, input file or output location. The message names the flag as typed."""


class MissingExtra(UsageError):
    """An optional dependency of one command is not installed."""


class OutputExists(UsageError, FileExistsError):
    """The output exists (an earlier refsim output) and replacing it was not asked for."""


# ----------------------------------------------------------------------------- extras

def missing_modules(*modules: str) -> list[str]:
    """The top-level modules among ``modules`` that cannot be imported here (not imported)."""
    out = []
    for m in modules:
        try:
            found = importlib.util.find_spec(m) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            out.append(m)
    return out


def require_extra(extra: str, *modules: str, what: str = "this command") -> None:
    """Raise :class:`MissingExtra` naming ``extra`` when any of ``modules`` is not installed."""
    missing = missing_modules(*modules)
    if missing:
        raise MissingExtra(f"{what} needs the [{extra}] extra (missing: {', '.join(missing)}); "
                           f"install it with: pip install 'refsim[{extra}]'")


# ----------------------------------------------------------------------------- outputs

def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode a new regular file gets from ``open()`` under the current umask."""
    return 0o666 & ~_umask()


def dir_mode() -> int:
    return 0o777 & ~_umask()


def follow_umask(path) -> None:
    """Give ``path`` (a file made by ``mkstemp``, or a tree of them) the umask's modes, not 0600/0700."""
    path = Path(path)
    if path.is_dir():
        os.chmod(path, dir_mode())
        for root, dirs, files in os.walk(path):
            for d in dirs:
                os.chmod(os.path.join(root, d), dir_mode())
            for f in files:
                os.chmod(os.path.join(root, f), file_mode())
    else:
        os.chmod(path, file_mode())


def read_marker(path) -> dict | None:
    """The marker a refsim command left in directory ``path``, or None."""
    try:
        with open(Path(path) / MARKER, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("tool") == "refsim" else None


def list_files(directory) -> list[str]:
    """Every entry under ``directory`` (files, links, empty directories) as sorted relative paths."""
    directory = Path(directory)
    out = []
    for root, dirs, files in os.walk(directory):
        rel = Path(root).relative_to(directory)
        out.extend(str(rel / f) if str(rel) != "." else f for f in files)
        out.extend(str(rel / d) + "/" if str(rel) != "." else d + "/" for d in dirs
                   if Path(root, d).is_symlink() or not any(os.scandir(Path(root, d))))
    return sorted(out)


def foreign_files(directory, written) -> list[str]:
    """What ``directory`` holds besides the files ``written`` (and the marker): a user's files."""
    allowed = set(written) | {MARKER}
    return [f for f in list_files(directory) if f not in allowed]


def is_own_output(path, kinds: tuple[str, ...] | None = None) -> bool:
    """True when directory ``path`` carries a refsim marker (of one of ``kinds`` when given) and holds
    nothing but the files that marker lists (a user's file added later makes it foreign)."""
    path = Path(path)
    if path.is_symlink() or not path.is_dir():
        return False
    m = read_marker(path)
    if m is None or (kinds is not None and m.get("kind") not in kinds) or m.get("state") == "incomplete":
        return False
    files = m.get("files")
    return isinstance(files, list) and not foreign_files(path, files)


def write_marker(directory, kind: str, **info) -> None:
    """The marker file that makes ``directory`` a refsim output of ``kind`` (with the pid that wrote it)."""
    data = {"tool": "refsim", "kind": kind, "pid": os.getpid(), **info}
    p = Path(directory) / MARKER
    p.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _related(a: Path, b: Path) -> bool:
    return a == b or a in b.parents or b in a.parents


def _pid_alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except (OSError, ValueError, TypeError, OverflowError):
        return False
    return True


def remove_stale_temporaries(out) -> list[Path]:
    """Remove ``.NAME.tmp-*`` / ``.NAME.old-*`` siblings of ``out`` that a dead refsim run left.

    Only directories carrying the refsim marker whose pid is no longer alive are removed;
    anything else with such a name is left alone. Returns what was removed."""
    out = Path(out)
    parent = out.parent
    removed = []
    if not parent.is_dir():
        return removed
    for tag in (TMP_TAG, OLD_TAG):
        for p in parent.glob(f".{out.name}{tag}*"):
            if not p.is_dir() or p.is_symlink():
                continue
            m = read_marker(p) or read_marker(p / "output")
            if m is not None and not _pid_alive(m.get("pid")):
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p)
    return removed


def check_output(out, *, flag: str = "--out", kinds: tuple[str, ...] | None = None, replace: bool = False,
                 replace_flag: str | None = "--force", inputs: dict | None = None, estimate_bytes: int = 0,
                 own=None) -> Path:
    """Check an output directory before any compute; returns its absolute path.

    out: the directory the command will create (or replace).
    kinds: the marker kinds this command may replace (None: any refsim marker).
    replace: the user asked to replace an existing output (``replace_flag``); with
        ``replace_flag=None`` the command replaces its own output without being asked (``refsim demo``).
    inputs: {flag: path} of what the command reads; the output may not equal, lie inside or
        contain any of them.
    estimate_bytes: what will be written; refused when the file system has less free space.
    own: a predicate ``own(path) -> bool`` recognising this command's outputs (default: the marker).
    """
    if out is None or str(out) == "":
        raise UsageError(f"{flag} is required: the directory to create")
    path = Path(os.path.abspath(os.fspath(out)))
    for in_flag, inp in (inputs or {}).items():
        if inp is None:
            continue
        ip = Path(os.path.abspath(os.fspath(inp)))
        if _related(path, ip) or _related(path.resolve(), ip.resolve()):
            raise UsageError(f"{flag} {out} is, is inside, or contains the input {in_flag} {inp}; "
                             f"choose an output apart from the inputs")
    cwd = Path(os.getcwd())
    if path == cwd or path in cwd.parents:
        raise UsageError(f"{flag} {out} is (or contains) the current directory; refsim replaces a directory as a "
                         f"whole, so choose a directory to create, e.g. {flag} ./out")
    is_own = own or (lambda p: is_own_output(p, kinds))
    if path.is_symlink():
        raise UsageError(f"{flag} {out} is a symbolic link; refsim writes only to a real directory path")
    if path.exists():
        if not path.is_dir():
            raise UsageError(f"{flag} {out} exists and is not a directory; refsim will not replace it")
        if not is_own(path):
            raise UsageError(f"{flag} {out} exists and is not an output this command wrote (no {MARKER} or "
                             f"manifest listing every file in it); refsim replaces only its own outputs, "
                             f"whatever flag is given: choose a new directory")
        if not replace and replace_flag is not None:
            raise OutputExists(f"{flag} {out} exists (an earlier refsim output); pass {replace_flag} to replace it")
    probe = path.parent
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise UsageError(f"{flag} {out}: {probe} is not a directory")
    if not os.access(probe, os.W_OK | os.X_OK) or not _can_create_in(probe):
        raise UsageError(f"{flag} {out}: {probe} is not writable")
    if path.exists() and not os.access(path, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} {out} is not writable")
    free = shutil.disk_usage(probe).free
    if estimate_bytes and estimate_bytes > free:
        raise UsageError(f"{flag} {out}: about {format_size(estimate_bytes)} would be written but only "
                         f"{format_size(free)} is free there")
    return path


def _can_create_in(directory: Path) -> bool:
    """Try it: permissions say yes to root on a read-only mount or in /proc."""
    trial = directory / f".refsim-probe-{os.getpid()}-{secrets.token_hex(3)}"
    try:
        os.mkdir(trial)
    except OSError:
        return False
    with contextlib.suppress(OSError):
        os.rmdir(trial)
    return True


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux MemAvailable), or None when unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(estimate_bytes: int, *, flag: str, value=None, what: str = "this run") -> None:
    """Refuse, naming ``flag``, a size whose estimated working memory exceeds what is available."""
    avail = available_memory()
    if avail is not None and estimate_bytes > avail:
        shown = f"{flag} {value}" if value is not None else flag
        raise UsageError(f"{shown}: {what} would need about {format_size(estimate_bytes)} of memory but only "
                         f"{format_size(avail)} is available; choose a smaller {flag}")


def format_size(n: float) -> str:
    """Bytes as people read them: ``512 B``, ``3.2 MiB``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


_size = format_size  # the name other modules used first


@contextlib.contextmanager
def staged_output(out, *, kind: str, marker: bool = True, own=None, **info):
    """Build directory ``out`` in a sibling temporary directory and rename it into place.

    Yields the temporary directory. On success a marker of ``kind`` listing every file written is
    put into it (unless ``marker`` is False: a golden bundle is recognised by its manifest), modes
    follow the umask, and it replaces ``out`` (which :func:`check_output` has already vetted). On
    any exception, Ctrl-C included, the temporary directory is removed and nothing at ``out`` changes.

    own: the predicate recognising this command's outputs (default: a marker of ``kind``). It is
    asked again just before the swap, because a long run gives time for something else to appear
    at ``out``: whatever is there then is replaced only when it is still the command's own.
    """
    if own is None:
        if not marker:
            raise TypeError("staged_output(marker=False) needs own=, the predicate for this command's outputs")
        own = lambda p: is_own_output(p, (kind,))  # noqa: E731
    out = Path(os.path.abspath(os.fspath(out)))
    remove_stale_temporaries(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}{TMP_TAG}{os.getpid()}-{secrets.token_hex(3)}"
    os.mkdir(tmp)
    old = None
    try:
        write_marker(tmp, kind, state="incomplete", **info)
        yield tmp
        if marker:
            os.remove(tmp / MARKER)
            write_marker(tmp, kind, files=list_files(tmp), **info)
        else:
            os.remove(tmp / MARKER)
        follow_umask(tmp)
        if out.exists() or out.is_symlink():
            if out.is_symlink() or not out.is_dir() or not own(out):
                raise UsageError(f"{out} appeared during the run and is not an output this command wrote: "
                                 f"left untouched, nothing written")
            old = out.parent / f".{out.name}{OLD_TAG}{os.getpid()}-{secrets.token_hex(3)}"
            os.mkdir(old)
            write_marker(old, kind, state="old")
            os.replace(out, old / "output")
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not out.exists() and (old / "output").exists():
            os.replace(old / "output", out)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def atomic_write_text(path, text: str) -> None:
    """Write ``text`` to a temporary name beside ``path`` and rename it (umask modes)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}{TMP_TAG}{os.getpid()}-{secrets.token_hex(3)}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


# ----------------------------------------------------------------------------- JSON

def finite_or_null(o):
    """NaN and +-Inf become None (JSON null, an empty CSV cell): the documented sentinel for a ratio that
    is undefined or infinite; never a float token that strict JSON parsers reject."""
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if isinstance(o, dict):
        return {k: finite_or_null(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [finite_or_null(v) for v in o]
    return o


def to_json(doc) -> str:
    """Strict JSON (``allow_nan=False``): non-finite numbers are null (see :func:`finite_or_null`)."""
    return json.dumps(finite_or_null(doc), indent=2, allow_nan=False)
