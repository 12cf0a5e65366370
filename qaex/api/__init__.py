"""Transports: the HTTP API (Quart blueprint) and the DIFF WebSocket server. No business logic here."""
