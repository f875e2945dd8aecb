"""The bakery (tests/cloud_collector/plant.py) as a fixture for every collector test."""

from tests.cloud_collector.plant import bakery

__all__ = ["bakery"]
