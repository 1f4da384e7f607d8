"""Discovery over a Kademlia DHT with multi-writer, self-expiring keys.

The node uses `discovery.Discovery` (start/stop/publish/lookups) and
`address` (bootstrap resolution, advertised IP); the router reads
`records.NodeRecord`. Underneath: `swarm` (one DHT node: get/put), `crawl`
(the iterative lookup), `protocol` (the wire, validated), `storage` (entries
per writer with relative ttls). Only this package imports kademlia, and this
file imports nothing, so `mesh.dht.records` stays free of it.
"""
