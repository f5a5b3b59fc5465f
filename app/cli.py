"""The `tickcast` command."""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="tickcast", description="tick-level market direction service")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="start the HTTP service (settings from TICKCAST_* and .env)")
    args = p.parse_args(argv)
    if args.command == "serve":
        from app.main import serve

        serve()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
