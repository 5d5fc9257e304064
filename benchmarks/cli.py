"""absl flags for the benchmarks, as every other command of the project uses.

Each benchmark keeps its command-line options in a dataclass (``Options``) and defines its
flags in a ``define_flags(fv)`` function that is called only when the benchmark runs as a
script (``if __name__ == "__main__": define_flags(flags.FLAGS); app.run(main)``), so importing
a benchmark (tests, another benchmark) defines no global flag and two benchmarks never clash
over a name such as ``--out``. ``define_flags`` lives in the benchmark's own module, so absl
counts its flags as the main module's and ``--helpshort`` lists them.

From Python, ``run(Options(...))`` runs a benchmark; ``parse(define_flags, Options, argv)``
reads a list of flags with the script's own definitions on a private ``FlagValues`` (tests).
"""
from __future__ import annotations

import dataclasses
import sys
from typing import Callable, Optional, Sequence

from absl import app, flags


def options_from_flags(cls, fv: flags.FlagValues = None):
    """``cls`` (an options dataclass) from the parsed flags of the same names."""
    fv = flags.FLAGS if fv is None else fv
    return cls(**{f.name: fv[f.name].value for f in dataclasses.fields(cls)})


def parse(define: Callable[[flags.FlagValues], None], cls, argv: Sequence[str]):
    """Options from a list of flags (no program name), parsed with ``define``'s flag
    definitions on a fresh ``FlagValues`` (the global ``flags.FLAGS`` is left alone). Raises
    ``flags.Error`` on an unknown flag or a bad value, ValueError on a positional argument."""
    fv = flags.FlagValues()
    define(fv)
    rest = fv(["benchmark"] + list(argv))
    if len(rest) > 1:
        raise ValueError(f"unexpected positional arguments {rest[1:]}")
    return options_from_flags(cls, fv)


def flag_argv(opts) -> list:
    """The flags that reproduce ``opts`` (fields that differ from their defaults), for the
    command recorded by a run started from Python."""
    out = []
    for f in dataclasses.fields(opts):
        v = getattr(opts, f.name)
        default = (f.default_factory() if f.default_factory is not dataclasses.MISSING
                   else f.default)
        if v == default:
            continue
        if isinstance(v, bool):
            out.append(f"--{f.name}" if v else f"--no{f.name}")
        elif isinstance(v, (list, tuple)):
            out += [f"--{f.name}={x}" for x in v]
        else:
            out.append(f"--{f.name}={v}")
    return out


def main(argv: Sequence[str], cls, run: Callable, resolve: Optional[Callable] = None):
    """A benchmark's absl entry point: no positional arguments; the flags become ``cls``
    options, checked by ``resolve`` (a ValueError is a usage error); then
    ``run(options, the command's flags)``."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {list(argv[1:])}")
    opts = options_from_flags(cls)
    if resolve is not None:
        try:
            resolve(opts)
        except ValueError as e:
            raise app.UsageError(str(e))
    return run(opts, sys.argv[1:])
