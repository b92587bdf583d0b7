"""The `pitome-hf` command line: `pitome-hf <command> ...` (see `pitome-hf --help`).

Expected failures end in one line on stderr that names the file or value and what to do: exit code 2 for usage errors
(a bad flag or value), 1 for failures (a missing or corrupt file, bad JSON, the Hub unreachable). `--debug` (anywhere
on the command line) or PITOME_HF_DEBUG=1 shows the full traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

import pitome_hf

# command -> (module, help). Each module has `main(argv)`; modules are imported only when their command runs.
COMMANDS = {
    "overview": ("pitome_hf.commands.overview", "what merging buys, in a few minutes: accuracy, speed where it pays, a summary"),
    "convert": ("pitome_hf.commands.convert", "write the PiToMe variant of a stock checkpoint (folder or Hub id)"),
    "evaluate": ("pitome_hf.commands.evaluate", "metric, GFLOPs, images/s of none vs ToMe vs PiToMe on a dataset"),
    "benchmark": ("pitome_hf.commands.benchmark", "images/s and FLOPs of none vs ToMe vs PiToMe, side by side"),
    "study": ("pitome_hf.commands.study", "does PiToMe beat ToMe here? every configuration, paired 95% intervals, real weights"),
    "fidelity": ("pitome_hf.commands.fidelity", "fidelity to the unmerged model on real weights (text: MiniLM, dinov2: ViT-S/14)"),
    "export": ("pitome_hf.commands.export", "a PiToMe/ToMe vision model as an ONNX graph (dynamic batch) for ONNX Runtime and optimum"),
    "push": ("pitome_hf.commands.push", "upload a PiToMe folder with a model card carrying measured results"),
}
EXAMPLES = """examples:
  pitome-hf overview                                   # what `make run` runs: accuracy, speed, a summary
  pitome-hf evaluate                                   # the embedded default: none vs ToMe vs PiToMe
  pitome-hf convert google/vit-base-patch16-224 --keep-ratio 0.9 --output vit-b16-pitome
  pitome-hf push vit-b16-pitome org/vit-b16-pitome --eval-json out/evaluate/results.json
  pitome-hf <command> --help                           # every option of a command, with its default
"""


def _usage_error(error: BaseException) -> bool:
    """Bad values given by the user (usage, exit 2) as opposed to failures of files, network or the environment."""
    return isinstance(error, (ValueError, TypeError)) and not isinstance(error, UnicodeDecodeError)


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    if isinstance(error, (OSError,)) and not isinstance(error, FileNotFoundError) and "Hub" not in text:
        text = f"{type(error).__name__}: {text}"
    return text[:600]


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("PITOME_HF_DEBUG", "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
    parser = argparse.ArgumentParser(
        prog="pitome-hf", description="PiToMe token merging for Hugging Face models.", epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"pitome-hf {pitome_hf.__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error (or PITOME_HF_DEBUG=1)")
    parser.add_argument("command", choices=list(COMMANDS), metavar="command",
                        help="; ".join(f"{k}: {v[1]}" for k, v in COMMANDS.items()).replace("%", "%%"))
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0
    if argv[0] == "--version":
        parser.parse_args(argv[:1])
    args = parser.parse_args(argv[:1])
    module = importlib.import_module(COMMANDS[args.command][0])
    try:
        return module.main(argv[1:]) or 0
    except KeyboardInterrupt:
        print(f"pitome-hf {args.command}: interrupted", file=sys.stderr)
        return 130
    except SystemExit:
        raise
    except Exception as error:  # expected failures: one line, not a stack trace (unless --debug)
        if debug:
            raise
        code = 2 if _usage_error(error) else 1
        print(f"pitome-hf {args.command}: error: {_one_line(error)} (--debug shows the traceback)", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
