"""The ``vloc`` command line: one entry point, one subcommand per pipeline stage.

Each subcommand lives beside the code it drives and exposes ``register(subparsers)``, which adds
its parser and sets ``func`` (called with the parsed args, returns an exit code). Modules are
imported only when their subcommand is chosen so ``vloc --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> (module, one-line help)
SUBCOMMANDS = {
    "sim": ("vloc_ros.sim.cli", "render the synthetic world: images, ground truth and ROS 2 bags"),
    "build-map": ("vloc_ros.mapping.cli", "build a localization map from images or a rosbag"),
    "localize": ("vloc_ros.localization_cli", "localize images against a map"),
    "eval": ("vloc_ros.evaluation.cli", "evaluate localization on a rosbag, write a report"),
    "images-to-bag": ("vloc_ros.sequence_bag", "write an image sequence with known poses as a ROS 2 bag"),
    "export": ("vloc_ros.backends.cli", "export the descriptor network for an inference backend"),
}


class UsageError(Exception):
    """Bad command-line input: printed without a traceback, exit code 2."""


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="vloc", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        if name == chosen:
            importlib.import_module(module_name).register(subparsers)
        else:
            subparsers.add_parser(name, help=help_text, add_help=False)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except UsageError as error:
        print(f"vloc {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    # Run as ``python -m vloc_ros.cli``: use the imported module's main so that subcommands raise
    # the same UsageError class that it catches (this file's __main__ copy would define another).
    from vloc_ros.cli import main as package_main

    sys.exit(package_main())
