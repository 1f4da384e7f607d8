"""Operator tools behind `llamamesh status|monitor|check|swarm`."""
