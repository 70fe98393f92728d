"""Nexus booking service: Restate components for seats, checkouts and seat maps."""
