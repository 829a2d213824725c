"""Runs one benchmark: ``python -m bench NAME [options]``.

Benchmarks print one line per measurement with ratios measured in the same
run, so figures from different machines compare by ratio, not by time.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys

BENCHMARKS = {
    "conversations": "bench.conversations",
    "fanout": "bench.fanout",
    "push": "bench.push",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("name", choices=sorted(BENCHMARKS))
    args, rest = parser.parse_known_args(argv)
    module = importlib.import_module(BENCHMARKS[args.name])
    result: int = asyncio.run(module.run(rest))
    return result


if __name__ == "__main__":
    sys.exit(main())
