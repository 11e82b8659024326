"""Running a command: one-line errors and the exit statuses every ``refsim`` front end shares.

- **An error is one line** ``refsim CMD: error: MESSAGE`` on stderr, exit 2, never a traceback.
  Commands raise :class:`refsim.outputs.UsageError` (or a ``ValueError``/``FileNotFoundError`` that
  already names the flag); :func:`run_command` prints it. Ctrl-C is ``refsim CMD: interrupted``,
  exit 130; a closed pipe (``refsim ... | head``) ends quietly with exit 141 (128 + SIGPIPE), as a
  shell tool does; anything else is one ``internal error`` line, exit 70.
- ``REFSIM_DEBUG=1`` in the environment lets exceptions through with their tracebacks.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import sys
from pathlib import Path

from refsim.outputs import UsageError

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141
EXIT_INTERNAL = 70


def refsim_command() -> str:
    """How the user can call refsim again from here: ``refsim`` when that is on PATH and is this
    install, else this environment's script (``.venv/bin/refsim``), else ``python -m refsim_app``."""
    script = Path(sys.prefix) / "bin" / "refsim"
    on_path = shutil.which("refsim")
    if on_path and script.exists() and Path(on_path).resolve() == script.resolve():
        return "refsim"
    if script.exists():
        try:
            return os.path.relpath(script)
        except ValueError:
            return str(script)
    return f"{os.path.basename(sys.executable)} -m refsim_app"


def run_command(func, args, command: str, *, prog: str | None = None) -> int:
    """Run a subcommand's ``func(args)``; bad input, Ctrl-C and a closed pipe end in one line.

    Exit status: the command's own (0, or 1 for a failed check), 2 for a bad argument, file or
    location (:class:`UsageError`, ``ValueError``, ``OSError``), 130 for Ctrl-C, 141 for a closed
    pipe, 70 for an internal error (a bug: one line, ``REFSIM_DEBUG=1`` shows the traceback)."""
    prog = prog or (f"refsim {command}" if command else "refsim")
    if os.environ.get("REFSIM_DEBUG"):  # a developer wants the traceback
        return int(func(args) or 0)
    try:
        rc = int(func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
        return rc
    except KeyboardInterrupt:
        print(f"\n{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except UsageError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except OSError as exc:
        if exc.errno == errno.EPIPE:
            _silence_stdout()
            return EXIT_BROKEN_PIPE
        print(f"{prog}: error: {describe_os_error(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except (ValueError, TypeError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except MemoryError:
        print(f"{prog}: error: out of memory; choose a smaller size", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:  # noqa: BLE001 - a user never sees a traceback; the message says how to get it
        print(f"{prog}: internal error: {type(exc).__name__}: {exc} (set REFSIM_DEBUG=1 for the traceback)",
              file=sys.stderr)
        return EXIT_INTERNAL


def describe_os_error(exc: OSError) -> str:
    """``PATH: reason`` for an OSError, whatever it carries."""
    where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
    return f"{where}{exc.strerror or exc}"


def quiet_broken_pipe() -> bool:
    """Flush stdout; on a closed pipe silence it (no 'Exception ignored' at exit). False when it was closed."""
    try:
        sys.stdout.flush()
        return True
    except (BrokenPipeError, ValueError):
        _silence_stdout()
        return False
    except OSError as exc:
        if exc.errno != errno.EPIPE:
            raise
        _silence_stdout()
        return False


def _silence_stdout() -> None:
    # Python flushes stdout at exit and would raise again on the closed pipe.
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


def package_main(register, *, prog: str, argv: list[str] | None = None) -> int:
    """``python -m PACKAGE.cli``: one package's subcommands alone (``register(subparsers)``), run as the
    umbrella ``refsim`` runs them; a package below the application layer cannot call ``refsim_app``."""
    import argparse

    parser = argparse.ArgumentParser(prog=prog)
    register(parser.add_subparsers(dest="command", metavar="COMMAND", required=True))
    args = parser.parse_args(argv)
    return run_command(args.func, args, args.command, prog=f"{prog} {args.command}")
