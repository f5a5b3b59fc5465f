"""Start the HTTP service; its settings come from TICKCAST_* environment variables and .env.

Everything that can refuse the start is checked before the app's lifespan runs
(which opens the store, starts ingestion and pulls): the settings, then the
port. A refusal is one line on stderr saying what to change, and exit status
2, never a traceback. With one worker the port is claimed here and the very
socket handed to uvicorn, so no other process can take it meanwhile; with
more, uvicorn binds it again in its own supervisor a moment later.
"""

from __future__ import annotations

import argparse
import errno
import logging
import socket
import sys
from typing import TYPE_CHECKING

import uvicorn

if TYPE_CHECKING:
    from app.settings import Settings

BACKLOG = 2048  # uvicorn's default
STARTUP_FAILURE = 3  # uvicorn's status when the app's lifespan fails


class PortUnavailable(OSError):
    """host:port cannot be listened on; the message says which setting to change."""


def build_parser(prog: str = "tickcast serve") -> argparse.ArgumentParser:
    return argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])


def main(argv: list[str] | None = None, *, prog: str = "tickcast serve") -> int:
    build_parser(prog).parse_args(argv)
    from app.settings import SettingsInvalid, get_settings

    try:
        get_settings()  # before app.main, whose import builds the app from these settings
    except SettingsInvalid as e:
        for line in e.problems:
            print(f"error: {line}", file=sys.stderr)
        return 2
    from app.main import serve

    return serve() or 0


def listen(host: str, port: int) -> socket.socket:
    """A socket listening on host:port, as uvicorn would bind it; PortUnavailable otherwise.

    Listening at once, not only binding: Linux lets two SO_REUSEADDR sockets bind one port
    while neither listens, so a bound socket alone would not keep a second tickcast out."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a just-stopped one's TIME_WAIT
        sock.bind((host, port))
        sock.listen(BACKLOG)
    except OSError as e:
        sock.close()
        raise PortUnavailable(e.errno, _why(host, port, e)) from None
    return sock


def _why(host: str, port: int, e: OSError) -> str:
    if e.errno == errno.EADDRINUSE:
        return (
            f"port {port} on {host} is in use (another tickcast?); set TICKCAST_PORT or stop "
            "the other process"
        )
    if e.errno in (errno.EACCES, errno.EPERM):
        return (
            f"port {port} on {host} needs privileges this user lacks (ports below 1024 usually "
            "do); set TICKCAST_PORT to 1024 or above"
        )
    if isinstance(e, socket.gaierror) or e.errno == errno.EADDRNOTAVAIL:
        return (
            f"cannot listen on {host}: no such address on this machine ({e.strerror or e}); set "
            "TICKCAST_HOST to 127.0.0.1, 0.0.0.0 or one of this machine's addresses"
        )
    return f"cannot listen on {host}:{port}: {e.strerror or e}; check TICKCAST_HOST and TICKCAST_PORT"


def run(settings: Settings) -> int:
    """uvicorn on the settings' host, port and worker count; the exit status."""
    try:
        sock = listen(settings.host, settings.port)
    except PortUnavailable as e:
        print(f"error: {e.strerror}", file=sys.stderr)
        return 2
    if settings.workers > 1:  # uvicorn's supervisor binds its own socket for its workers
        sock.close()
        uvicorn.run(
            "app.main:app",
            host=settings.host,
            port=settings.port,
            workers=settings.workers,
            log_level=settings.log_level,
        )
        return 0
    config = uvicorn.Config(
        "app.main:app", host=settings.host, port=settings.port, log_level=settings.log_level
    )
    server = _Server(config)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn re-raises the Ctrl-C it handled once it has shut down
        pass
    finally:
        sock.close()
    return 0 if server.started else STARTUP_FAILURE


class _Server(uvicorn.Server):
    """uvicorn's Server, saying where it listens once the lifespan has started (given its
    socket, uvicorn itself says nothing)."""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and sockets:
            host, port = sockets[0].getsockname()[:2]
            url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
            logging.getLogger("uvicorn.error").info("Uvicorn running on %s (Press CTRL+C to quit)", url)
