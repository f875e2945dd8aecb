"""The MQTT message contract between edge agents and collectors, and its topics.

This is the one place both deployables import; neither imports the other.
"""
