"""python -m sa2va.eval refcoco|refvos|gcg|regioncap --data DIR --model M [options]"""

from __future__ import annotations

import argparse
import json
import pickle
import sys

import sa2va

from . import gcg, refcoco, refvos, regioncap


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sa2va.eval", description=__doc__)
    commands = parser.add_subparsers(dest="benchmark", required=True)
    for name, module, summary in (("refcoco", refcoco, "RefCOCO / RefCOCO+ / RefCOCOg: cIoU, gIoU"),
                                  ("refvos", refvos, "MeViS, Ref-YouTube-VOS, ReVOS, Ref-DAVIS17: J, F, J&F"),
                                  ("gcg", gcg, "grounded captions (GranD-f): mask AP, mIoU, recall"),
                                  ("regioncap", regioncap, "region captions (RefCOCOg regions as visual prompts): "
                                   "METEOR, CIDEr")):
        sub = commands.add_parser(name, help=summary, description=module.__doc__,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(sub)
        sub.set_defaults(run=module.run)
    args = parser.parse_args(argv)
    try:
        result = args.run(args)
    except sa2va.Error as e:  # the model's own message (an image that does not open, say)
        raise SystemExit(f"error: {e}") from None
    except (OSError, ValueError, KeyError, IndexError, TypeError, ImportError, EOFError,
            pickle.UnpicklingError) as e:
        # Data the checks did not foresee: a message, not a traceback.
        raise SystemExit(f"error: {type(e).__name__}: {e}") from None
    json.dump(printable(result), sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0


def printable(value):
    """The result as printed: an undefined metric (null in metrics.json) reads "n/a"."""
    if isinstance(value, dict):
        return {k: printable(v) for k, v in value.items()}
    return "n/a" if value is None else value


if __name__ == "__main__":
    sys.exit(main())
