"""Helpers shared by the test suite (fixture data, tiny models)."""
