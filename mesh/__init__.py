"""LlamaMesh: a peer-to-peer inference mesh for llama.cpp."""

__version__ = "0.1.0"
