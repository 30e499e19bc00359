"""Mesh layer: identity, signed records, DHT membership and the encrypted peer channel."""
