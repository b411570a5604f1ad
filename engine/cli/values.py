"""How the command line reads its words: every value a flag cannot use is a one-line refusal
with exit status 1, like any other bad input, never argparse's usage text and status 2."""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from typing import NoReturn

from ilo.errors import InputError

# torch's generators take a 64-bit seed, and the solver multiplies a seed before it seeds one
# (a start's seed is seed * 1009 + restart), so seeds are kept to 32 bits: room to spare.
MAX_SEED = 2**32 - 1

# A comma-separated list whose first value is negative ("-5,0,10,10"): argparse takes only a
# bare negative number for a value and would read this one as an unknown option.
_NEGATIVE_LIST = re.compile(r"^-[0-9.][^,]*,.*$")


class UsageError(InputError):
    """A flag or value the command line cannot use."""


class Parser(argparse.ArgumentParser):
    """argparse, but a wrong word is an error the caller reports in one line, not an exit(2)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def join_negative_lists(argv: Sequence[str]) -> list[str]:
    """`--box -5,0,10,10` as `--box=-5,0,10,10`, so the two spellings mean the same."""
    out: list[str] = []
    for word in argv:
        if out and out[-1].startswith("--") and "=" not in out[-1] and _NEGATIVE_LIST.match(word):
            out[-1] = f"{out[-1]}={word}"
        else:
            out.append(word)
    return out


def seed(text: str) -> int:
    """A seed: a whole number from 0 to MAX_SEED."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number from 0 to {MAX_SEED}, got '{text}'") from None
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"seeds run from 0 to {MAX_SEED}, got {text}")
    return value


def whole(text: str, what: str) -> int:
    """One whole number, or a message that says why `text` is not one (1e9 is a float to Python)."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        as_float = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number ({what})") from None
    raise argparse.ArgumentTypeError(
        f"'{text}' is not a whole number ({what}); write it in digits"
        + (f", e.g. {int(as_float)}" if as_float.is_integer() and abs(as_float) < 1e15 else "")
    )
