"""Start the HTTP service; its settings come from TICKCAST_* environment variables and .env."""

from __future__ import annotations

import argparse


def build_parser(prog: str = "tickcast serve") -> argparse.ArgumentParser:
    return argparse.ArgumentParser(prog=prog, description=__doc__)


def main(argv: list[str] | None = None, *, prog: str = "tickcast serve") -> int:
    build_parser(prog).parse_args(argv)
    from app.main import serve

    serve()
    return 0
