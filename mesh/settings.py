"""The node's one configuration model.

Sources, highest first: command-line flags (passed in as init values by
`mesh.cli`), the environment, a `.env` file in the working directory, then
the defaults below. Environment names are LlamaNet's (`MODEL_PATH`, `PORT`,
`DHT_PORT`, `BOOTSTRAP_NODES`, ...) so existing compose files keep working.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
HostPort = tuple[str, int]

_HOST_LABEL = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")


def parse_host_port(text: str) -> HostPort:
    """Parse `host:port` or `[v6]:port`; raise ValueError with a readable reason."""
    text = text.strip()
    if text.startswith("["):
        host, sep, port_text = text[1:].partition("]:")
    else:
        host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"{text!r} is not host:port")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"{text!r} has no valid port (1-65535)")
    if not _is_host(host):
        raise ValueError(f"{text!r} has an invalid host name")
    return host, int(port_text)


def _is_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return len(host) <= 253 and all(_HOST_LABEL.match(p) for p in host.split("."))


class Settings(BaseSettings):
    """Everything a node needs to start; built once in `mesh.cli`, passed down."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
        case_sensitive=False,
    )

    # -- the local model -------------------------------------------------
    model_path: Path | None = Field(
        None,
        description="GGUF file to serve. Default: the bundled Gemma 3 270M Q4_K_M "
        "(a small base model for trying the mesh).",
    )
    model_name: str | None = Field(
        None,
        description="Model id clients ask for. Default: the GGUF's general.name "
        "(else the file name), lower-cased with dashes.",
    )
    chat_format: str | None = Field(
        None,
        description="llama-cpp-python chat format (e.g. gemma, chatml, llama-3). "
        "Default: the GGUF's chat template, else a format picked from its architecture.",
    )
    n_ctx: int = Field(2048, ge=16, description="Context size in tokens.")
    n_batch: int = Field(512, ge=1, description="Prompt processing batch size.")
    n_threads: int | None = Field(
        None, ge=1, description="CPU threads for generation. Default: llama.cpp's choice."
    )
    n_gpu_layers: int | None = Field(
        None, ge=-1,
        description="Layers offloaded to the GPU (0 = CPU only, -1 = all). Default: all when "
        "the GPU is used (see HARDWARE_MODE), else 0.",
    )
    hardware_mode: Literal["auto", "gpu", "cpu"] = Field(
        "auto",
        description="auto: use the GPU when llama.cpp was built with GPU offload; gpu: require "
        "it; cpu: never offload.",
    )
    engine: Literal["llama", "scripted"] = Field(
        "llama",
        description="llama: llama.cpp on MODEL_PATH. scripted: fixed tokens with a fixed "
        "delay, for benchmarks and router tests only.",
    )
    scripted_tokens: int = Field(64, ge=1, description="Tokens a scripted engine plays.")
    scripted_delay_ms: float = Field(
        0.0, ge=0, description="Milliseconds between a scripted engine's tokens."
    )
    max_queue: int = Field(
        16,
        ge=0,
        description="Requests that may wait for the engine; beyond it the node answers 503.",
    )

    # -- HTTP ------------------------------------------------------------
    host: str = Field("0.0.0.0", description="Address the HTTP API binds.")
    port: int = Field(8000, ge=0, le=65535, description="HTTP API port (0 = any free port).")
    max_body_bytes: int = Field(
        4 * 1024 * 1024, ge=1024, description="Largest request body accepted (413 above it)."
    )

    # -- identity and state ----------------------------------------------
    node_id: str | None = Field(
        None,
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9._:-]+$",
        description="Override the hardware-fingerprint node id.",
    )
    state_dir: Path = Field(
        Path("~/.llamamesh"),
        description="Where the node keeps its id and the assembled default model.",
    )

    # -- DHT / mesh ------------------------------------------------------
    dht_port: int = Field(8001, ge=0, le=65535, description="Kademlia UDP port (0 = any free port).")
    bootstrap_nodes: Annotated[tuple[HostPort, ...], NoDecode] = Field(
        (),
        description="DHT peers to join, as host:port,host:port. Empty: start a new swarm.",
    )
    advertise_host: str | None = Field(
        None,
        description="Address peers use to reach this node. Default: the interface "
        "that routes to the first bootstrap peer.",
    )
    lan_discovery: bool = Field(
        True,
        description="Find a first DHT peer on the LAN by UDP broadcast (no bootstrap list "
        "needed). Off for nodes bound to loopback.",
    )
    lan_interfaces: Annotated[tuple[str, ...], NoDecode] = Field(
        (),
        description="Interfaces the LAN beacon may use, as eth0,wlan0. Empty: every "
        "non-loopback IPv4 interface.",
    )
    lan_discovery_port: int = Field(51900, ge=1, le=65535,
                                    description="UDP port of the LAN beacon.")
    heartbeat_interval: float = Field(
        10.0, gt=0, le=3600, description="Seconds between DHT publishes of this node's record."
    )

    ready_file: Path | None = Field(
        None,
        description="Once serving, write the node's URL, ports and id here as JSON "
        "(for supervisors and tests).",
    )

    # -- logging ---------------------------------------------------------
    log_level: LogLevel = Field("INFO", description="Log verbosity.")

    @field_validator("bootstrap_nodes", mode="before")
    @classmethod
    def _split_bootstrap(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(parse_host_port(item) for item in value.split(",") if item.strip())
        return value

    @field_validator("lan_interfaces", mode="before")
    @classmethod
    def _split_interfaces(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(name.strip() for name in value.split(",") if name.strip())
        return value

    @field_validator("hardware_mode", mode="before")
    @classmethod
    def _lower_hardware_mode(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_log_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("advertise_host")
    @classmethod
    def _check_advertise_host(cls, value: str | None) -> str | None:
        if value is not None and not _is_host(value):
            raise ValueError(f"{value!r} is not a host name or IP address")
        if value in ("0.0.0.0", "::"):
            raise ValueError("peers cannot reach a wildcard address; give this node's real address")
        return value

    @field_validator("state_dir", "model_path", "ready_file")
    @classmethod
    def _expand_user(cls, value: Path | None) -> Path | None:
        return value.expanduser() if value is not None else None
