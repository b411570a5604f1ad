"""Subcommands of `ilo`: each module has `add_parser(subparsers)` and `run(args) -> int`."""
