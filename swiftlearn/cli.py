"""``swiftlearn`` command line: ``train | evaluate | export | bench | info``.

Each command lives beside the code it drives: a module exposes ``add_cli(subparsers)``, which
registers its sub-command and sets ``func``. This file only assembles them, so importing the CLI
never pulls in an optional dependency before its command runs.
"""

from __future__ import annotations

import argparse
import importlib
import platform
import sys

from .utils import cpu_kind, run_command

# (module, attribute) of each command's registrar, in the order `--help` lists them
_COMMANDS = (
    ("swiftlearn.train.cli", "add_cli"),
    ("swiftlearn.export.cli", "add_cli"),
    ("swiftlearn.bench.cli", "add_cli"),
)


def _info(args: argparse.Namespace) -> int:
    import torch

    from . import __version__
    from .bench.deploy import advice
    from .data import cache_usage, find_root
    from .model import VARIANTS, build_model

    print(f"swiftlearn {__version__} | python {platform.python_version()} | torch "
          f"{torch.__version__} | threads {torch.get_num_threads()}")
    kind = cpu_kind()
    print(f"CPU: {kind['label']}; speed-relevant flags: {', '.join(kind['flags']) or 'none'}")
    print(advice(kind["slug"]))
    root = find_root(required=False)
    print(f"Imagenette root: {root if root else 'not found (set SWIFTLEARN_DATA)'}")
    folder, size, count = cache_usage()
    print(f"decoded cache: {folder} ({size / 1e9:.2f} GB in {count} split cache(s); deleting "
          "the folder is safe, it is rebuilt when needed)")
    for name in VARIANTS:
        n = sum(p.numel() for p in build_model(name).parameters())
        print(f"{name:16s} {n / 1e6:6.2f} M parameters")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="swiftlearn", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module, attr in _COMMANDS:
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name != module:  # a real missing dependency, not an absent module
                raise
            continue
        getattr(mod, attr)(sub)
    info = sub.add_parser("info", help="versions, threads, data root, decoded cache and model "
                          "sizes")
    info.set_defaults(func=_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
