"""The wire protocol and connections: everything that talks RESP to a server, and nothing of Feast.

RESP encoding and reply walking (``wire``), protocol decisions as I/O-free generators
(``flow``), one exchange on a pooled connection (``transport``), connection strings and the
errors users see (``connection``), redis-py clients per deployment (``topology``), client
settings (``settings``), Feast's key and field bytes without Feast (``keys``), and the
event-time script with its Lua (``script``). The store, the engines, the server and the admin
tools build on this layer; it imports none of them.
"""
