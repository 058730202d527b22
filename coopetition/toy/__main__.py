"""``python -m coopetition.toy [options]``: the ``coopetition toy`` subcommand without the main CLI."""

import argparse
import sys

from coopetition.errors import CoopetitionError
from coopetition.toy import cli


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m coopetition.toy")
    cli.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["toy", *(sys.argv[1:] if argv is None else argv)])
    try:
        return args.func(args)
    except CoopetitionError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
