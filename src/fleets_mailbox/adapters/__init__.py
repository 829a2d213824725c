"""Adapters: in-memory, SQL, MongoDB, RocketMQ, the local bus and WebSocket.

Adapters depend on the core package, never the other way round; optional
drivers are imported only by the adapter module that needs them.
"""
