"""`llamamesh` / `python -m mesh`: argv → Settings → run.

Flags are generated from `Settings` so a flag, its environment variable and
its documentation never drift apart. Every configuration problem ends in
one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Coroutine, Sequence
from typing import Any, NoReturn

from pydantic import ValidationError

from mesh import __version__
from mesh.errors import StartupError
from mesh.settings import Settings

EXIT_CONFIG = 2
PROG = "llamamesh"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        fail(message)


def fail(message: str) -> NoReturn:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    raise SystemExit(EXIT_CONFIG)


def serve_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=f"{PROG} [serve]",
        description="Start a LlamaMesh node: serve a GGUF model through an OpenAI-compatible "
        "API and route to peers found through the Kademlia DHT.",
        epilog="Each flag also reads the environment variable shown, then a .env file. "
        "Other commands: status, monitor, check, swarm (`llamamesh COMMAND --help`).",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    for name, field in Settings.model_fields.items():
        env = name.upper()
        parser.add_argument(
            "--" + name.replace("_", "-"), dest=name, metavar=env, default=None,
            help=f"{field.description} [env {env}; default {_default_text(field.default)}]",
        )
    return parser


def _default_text(value: object) -> str:
    if value in (None, ()):
        return "none"
    return str(value)


def settings_from(argv: Sequence[str]) -> Settings:
    namespace = serve_parser().parse_args(list(argv))
    overrides = {k: v for k, v in vars(namespace).items() if v is not None}
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        fail(describe_validation_error(exc))


def describe_validation_error(exc: ValidationError) -> str:
    first = exc.errors()[0]
    name = str(first["loc"][0]) if first["loc"] else ""
    message = first["msg"].removeprefix("Value error, ")
    if not name:
        return message
    return f"--{name.replace('_', '-')}/{name.upper()}: {message}"


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level, stream=sys.stderr,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    if level != "DEBUG":
        # kademlia logs every RPC at INFO/DEBUG and a traceback per garbage datagram.
        for noisy in ("kademlia", "rpcudp", "aiohttp.access"):
            logging.getLogger(noisy).setLevel(logging.WARNING)


def run(coro: Coroutine[Any, Any, None]) -> None:
    try:
        import uvloop
    except ImportError:  # Windows has no uvloop
        asyncio.run(coro)
    else:
        uvloop.run(coro)


def tool_parser(command: str) -> argparse.ArgumentParser:
    from mesh.ops.status import DEFAULT_TARGET

    parser = _Parser(prog=f"{PROG} {command}", description=TOOL_HELP[command])
    if command in ("status", "monitor"):
        parser.add_argument("target", nargs="?", default=DEFAULT_TARGET,
                            help="a node URL, or a DHT host:port to join "
                                 f"(default {DEFAULT_TARGET})")
    if command == "monitor":
        parser.add_argument("--interval", type=float, default=2.0, help="seconds per refresh")
        parser.add_argument("--count", type=int, default=None,
                            help="stop after this many refreshes (default: until Ctrl-C)")
    if command == "check":
        parser.add_argument("url", nargs="?", default=DEFAULT_TARGET, help="the node to check")
        parser.add_argument("--min-healthy-peers", type=int, default=0,
                            help="fail unless at least this many peers are healthy")
    if command == "swarm":
        parser.add_argument("count", type=int, help="how many nodes to start")
        parser.add_argument("--base-port", type=int, default=8000,
                            help="node i uses HTTP base+2i and DHT base+2i+1")
        parser.add_argument("--host", default="127.0.0.1", help="address every node binds")
        parser.add_argument("--state-dir", default="~/.llamamesh", help="logs and node state")
    return parser


TOOL_HELP = {
    "status": "Show the swarm as a table: nodes, models, load, tokens/s, health, last seen.",
    "monitor": "The status table, live in the terminal until Ctrl-C.",
    "check": "Health check of a node and its peers: exit 0, or 1 with a one-line reason.",
    "swarm": "Start N nodes on this machine (no Docker); extra flags go to every node.",
}


def run_tool(command: str, args: list[str]) -> int:
    from mesh.ops import status as ops

    if command == "swarm":
        known, node_args = tool_parser(command).parse_known_args(args)
    else:
        known, node_args = tool_parser(command).parse_args(args), []
    try:
        if command == "status":
            return asyncio.run(ops.status(known.target))
        if command == "monitor":
            try:
                return asyncio.run(ops.monitor(known.target, interval_s=known.interval,
                                               count=known.count))
            except KeyboardInterrupt:
                return 0
        if command == "check":
            code, line = asyncio.run(ops.check(known.url,
                                               min_healthy_peers=known.min_healthy_peers))
            print(line, file=sys.stdout if code == 0 else sys.stderr)
            return code
        from pathlib import Path

        from mesh.ops.swarm import SwarmError, run_swarm

        if known.count < 1:
            fail("swarm needs a count of at least 1")
        try:
            return run_swarm(known.count, base_port=known.base_port, host=known.host,
                             state_dir=Path(known.state_dir).expanduser(), node_args=node_args)
        except SwarmError as exc:
            print(f"{PROG} swarm: {exc}", file=sys.stderr)
            return 1
    except ops.StatusError as exc:
        print(f"{PROG} {command}: {exc}", file=sys.stderr)
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    command = args[0] if args and args[0] in ("serve", *TOOL_HELP) else "serve"
    if args and args[0] == command:
        args = args[1:]
    if command != "serve":
        return run_tool(command, args)
    settings = settings_from(args)
    configure_logging(settings.log_level)
    from mesh.node import serve

    try:
        run(serve(settings))
    except StartupError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
