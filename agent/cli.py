"""``maskwatch`` command line: run, detect, evaluate, collect, label, explain, check-config, bench, demo,
install-service.

Exit codes: 0 success; 1 some input could not be read (``detect``); 2 usage, config or model errors
(one message on stderr naming the file, key and fix -- never a traceback).

This module is the command table only: each command is a module with ``add_arguments(parser)`` and
``run(args) -> int``, imported when its subcommand is used (or when the full parser is built, for
``--help``), so ``maskwatch run`` loads no operator tool.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import List, Optional, Sequence, Tuple

from agent import __version__, logs
from agent.config import ConfigError
from agent.errors import EXIT_OK, EXIT_USAGE, UsageError
from agent.model import ModelError
from agent.pipeline.source import SourceError
from agent.service.preview import PreviewError

# (name, module, takes --config, help): the order is the order of `maskwatch --help`.
COMMANDS: Tuple[Tuple[str, str, bool, str], ...] = (
    ("run", "agent.service.run", True, "run the agent on the configured camera"),
    ("detect", "agent.tools.detect", True, "find and classify faces in images, folders or videos"),
    ("check-config", "agent.tools.check_config", True, "validate a config file and load its models"),
    ("bench", "agent.tools.bench", True, "time each stage on 640x480 frames"),
    ("evaluate", "agent.tools.evaluate", True, "score detect + classify against annotated face boxes"),
    ("collect", "agent.tools.collect", True,
     "save aligned face crops from a source for labelling (never on in the service)"),
    ("label", "agent.tools.label", True, "label collected crops in a local web page (keys 1-4, u: undo)"),
    ("explain", "agent.tools.explain", True, "per face, an occlusion map of what changes the label most (PNG)"),
    ("demo", "agent.tools.demo", True, "run the agent on a generated doorway clip and show its work"),
    ("install-service", "agent.service.install", False,
     "install the systemd unit, a default config and the models"),
)


def parser(only: Optional[str] = None) -> argparse.ArgumentParser:
    """Every command's parser; with ``only``, just that command's module is imported and its arguments
    added (the others are listed for --help with no arguments)."""
    p = argparse.ArgumentParser(prog="maskwatch", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"maskwatch {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module, with_config, text in COMMANDS:
        sp = sub.add_parser(name, help=text)
        if only is not None and name != only:
            continue
        if with_config:
            sp.add_argument("--config", "-c", metavar="FILE",
                            help="config file (default: $MASKWATCH_CONFIG, ./config.yaml, /etc/maskwatch/config.yaml)")
        mod = importlib.import_module(module)
        mod.add_arguments(sp)
        sp.set_defaults(func=mod.run)
    return p


def command_of(argv: Sequence[str]) -> Optional[str]:
    """The command ``argv`` names (the first word that is not an option), if it is one of the table's."""
    first = next((a for a in argv if not a.startswith("-")), None)
    return first if first in {c[0] for c in COMMANDS} else None


def main(argv: Optional[Sequence[str]] = None) -> int:
    logs.setup(sys.stderr)
    words: List[str] = list(sys.argv[1:] if argv is None else argv)
    args = parser(command_of(words)).parse_args(words)
    try:
        return int(args.func(args))
    except (ConfigError, ModelError, SourceError, UsageError, PreviewError) as exc:
        print(f"maskwatch: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
