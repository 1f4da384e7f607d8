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
        epilog="Each flag also reads the environment variable shown, then a .env file.",
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


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "serve":
        args = args[1:]
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
