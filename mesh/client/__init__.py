"""An async Python client for a LlamaMesh swarm.

    async with Client(base_url="http://127.0.0.1:8000") as client:      # ask any node
        answer = await client.generate(prompt="Hello", max_tokens=32)
    async with Client(bootstrap_nodes="10.0.0.5:8001") as client:       # join the DHT
        nodes = await client.dht_discovery.get_nodes()
"""

from mesh.client.api import Client, ClientError, GenerationResult, MeshStreamError
from mesh.client.discovery import NodeInfo

__all__ = ["Client", "ClientError", "GenerationResult", "MeshStreamError", "NodeInfo"]
