"""The ``lgfa`` command: one subcommand per stage, each imported only when it runs.

A subcommand is a module with ``add_arguments(parser)`` and ``run(args) -> int``. Only the chosen
module is imported, so ``lgfa animate --backend onnxruntime`` never imports torch. Bad input ends
in one line on stderr and exit code 2, never a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
import typing
from collections.abc import Sequence

from lgfa_deploy.errors import LgfaError

# name -> (module, one-line help). Modules under training/ and export/ need the `train` extra.
COMMANDS: dict[str, tuple[str, str]] = {
    "animate": ("lgfa_deploy.commands.animate", "turn one sentence into a video clip of a face"),
    "stream": ("lgfa_deploy.commands.stream", "animate sentence after sentence, to a window, an mp4 or a pipe"),
    "align": ("lgfa_deploy.commands.align", "align a face photo by the FFHQ recipe (256 px for e4e, 1024 px FFHQ)"),
    "inspect": ("lgfa_deploy.commands.inspect", "say what a checkpoint, graph or bundle is"),
    "export": ("export.cli", "checkpoints -> a bundle of verified ONNX graphs"),
    "verify": ("export.verify", "check a bundle's graphs against PyTorch, TensorRT's operator list and its hashes"),
    "build-engines": ("export.tensorrt_build", "build TensorRT engines for this GPU into a bundle"),
    "bench": ("lgfa_deploy.commands.bench", "measure latency and fps per backend, stage and batch"),
    "eval": ("lgfa_deploy.commands.eval", "score clips against their sentences (ground truth on the synthetic face domain)"),
    "serve": ("lgfa_deploy.commands.serve", "serve a bundle on Triton Inference Server, many streams at once"),
    "client": ("lgfa_deploy.commands.client", "stream frames from 'lgfa serve' to a window, an mp4 or a pipe"),
    "triton-repo": ("lgfa_deploy.commands.triton_repo", "write a model repository for NVIDIA's Triton container"),
    "train": ("training.cli", "train the motion networks and text encoder"),
}

EPILOG = """examples:
  lgfa animate --backend torch --preset tiny --random-init --text "The person is smiling." --out clip.mp4
  lgfa export --preset tiny --random-init --out engines/tiny
  lgfa animate --bundle engines/tiny --text "The person is smiling." --seed 0 --out clip.mp4
  lgfa inspect engines/tiny
  lgfa align photo.jpg --out aligned.png

'lgfa COMMAND --help' explains each command."""


def user_errors() -> tuple[type[BaseException], ...]:
    """Exception types whose message is for the user: ours, and the training side's once loaded."""
    errors: list[type[BaseException]] = [LgfaError]
    training_errors = sys.modules.get("training.errors")
    if training_errors is not None:
        errors.append(training_errors.TrainingError)
    return tuple(errors)


class OneLineParser(argparse.ArgumentParser):
    """argparse's errors in one line (no usage block), exit code 2."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {message}; see '{self.prog} --help'\n")


def build_parser(command: str | None) -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="lgfa",
        description="Language-guided face animation: export, run and measure real-time engines.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        sub = subparsers.add_parser(
            name, help=help_text, description=help_text, formatter_class=argparse.ArgumentDefaultsHelpFormatter
        )
        if name == command:
            try:
                module = importlib.import_module(module_name)
            except ImportError as exc:
                raise LgfaError(
                    f"'lgfa {name}' needs packages that are not installed ({exc.name or exc}); "
                    "install them with: pip install 'lgfa-deploy[train]'"
                ) from None
            module.add_arguments(sub)
            sub.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    try:
        args = build_parser(command if command in COMMANDS else None).parse_args(argv)
        logging.basicConfig(
            level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s", stream=sys.stderr
        )
        if args.command is None:
            build_parser(None).print_help()
            return 2
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("lgfa: interrupted", file=sys.stderr)
        return 130
    except user_errors() as exc:
        print(f"lgfa {command or ''}: error: {exc}".replace("  ", " "), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
