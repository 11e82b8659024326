"""The command-line toolkit every ``refsim`` front end shares (golden, hwmodel, cukernels, refsim_app).

Layers (tests/test_layering.py enforces them with import-linter, contracts in pyproject.toml)::

    refsim_app                      the `refsim` command, the demo, the calibrate pipeline
    golden.cli  hwmodel.cli  cukernels.cli    each package's own subcommands
    refsim_cli                      this toolkit: argparse types, run_command, --preset/--spec
    golden  hwmodel  cukernels      the libraries above the reference
    refsim                          the bit-exact reference (imports none of the above)

Why a package of its own: the subcommands of golden, hwmodel and cukernels need the same argument
types, the same one-line errors and exit statuses and the same ``--preset/--spec`` options as the
application's, but those packages sit *below* the application layer and may not import
``refsim_app``; the reference, below them all, may not import the command line at all. So what is
command line lives here, between the two, and what a library function needs too (the
:class:`~refsim.outputs.UsageError` it raises, checked and staged outputs, atomic writes, the memory
check) stays in :mod:`refsim.outputs`, re-exported here so that a front end imports one module.
"""

from refsim.outputs import (  # noqa: F401  (re-exported: a front end imports one module)
    MARKER,
    OLD_TAG,
    TMP_TAG,
    MissingExtra,
    OutputExists,
    UsageError,
    atomic_write_text,
    available_memory,
    check_memory,
    check_output,
    finite_or_null,
    format_size,
    is_own_output,
    missing_modules,
    read_marker,
    require_extra,
    staged_output,
    to_json,
    write_marker,
)
from refsim_cli.argtypes import int_range, positive_int, seed_int  # noqa: F401
from refsim_cli.running import (  # noqa: F401
    EXIT_BROKEN_PIPE,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    describe_os_error,
    quiet_broken_pipe,
    refsim_command,
    run_command,
)
