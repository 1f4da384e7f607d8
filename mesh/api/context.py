"""What every handler can reach: one typed object stored on the app."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from aiohttp import web

from mesh import __version__
from mesh.dht.discovery import Discovery
from mesh.identity import Identity
from mesh.local.engine import Engine
from mesh.metrics import Metrics
from mesh.router.router import Router
from mesh.settings import Settings


@dataclass(slots=True)
class NodeContext:
    settings: Settings
    identity: Identity
    engine: Engine
    advertised_url: str
    http_port: int
    discovery: Discovery
    router: Router = field(init=False)
    metrics: Metrics = field(init=False)
    version: str = __version__
    started_at: float = field(default_factory=time.monotonic)
    started_wall: float = field(default_factory=time.time)

    @property
    def node_id(self) -> str:
        return self.identity.node_id

    @property
    def uptime_s(self) -> float:
        return time.monotonic() - self.started_at


NODE = web.AppKey("node", NodeContext)
