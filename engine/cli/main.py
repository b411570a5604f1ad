"""The `ilo` command: a thin face over the library. Each subcommand lives in ilo.engine.cli."""

from __future__ import annotations

import argparse
import errno
import sys
from typing import Sequence

from ilo.engine.cli import bench, convert, degrade, export, info, restore, sample, serve
from ilo.engine.cli.values import Parser, UsageError, join_negative_lists
from ilo.errors import IloError
from ilo.version import __version__

SUBCOMMANDS = (restore, serve, degrade, export, bench, sample, info, convert)
# ENAMETOOLONG and ELOOP: a path the user named that the file system cannot follow (an input's, say)
_ENVIRONMENT_ERRNOS = {
    errno.EACCES,
    errno.EPERM,
    errno.EROFS,
    errno.ENOSPC,
    errno.EDQUOT,
    errno.ENOTDIR,
    errno.EISDIR,
    errno.ENAMETOOLONG,
    errno.ELOOP,
}


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="ilo",
        description="Restore images by Intermediate Layer Optimization over a pretrained generator.",
    )
    parser.add_argument("--version", action="version", version=f"ilo {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in SUBCOMMANDS:
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(join_negative_lists(sys.argv[1:] if argv is None else argv))
    except UsageError as e:
        print(f"ilo: error: {e}", file=sys.stderr)
        return 1
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return args.run(args)
    except IloError as e:
        if args.debug:
            raise
        print(f"ilo: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        # the machine refused a write or read (permissions, a read-only or full disk): the
        # user's to fix, so one line; any other OSError is a bug and keeps its traceback
        if args.debug or e.errno not in _ENVIRONMENT_ERRNOS:
            raise
        print(f"ilo: error: {e.filename or ''}{': ' if e.filename else ''}{e.strerror or e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("ilo: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
