"""The REST API under /api: accounts, users, capture control, packets, statistics, exports.

One module per area; `context.py` holds what every handler shares (the hub, the token verifier,
the control client) and the two rules every handler follows: who may call it (`require`) and how
a request body is read (`read_body`). Every error leaves as `{"detail", "error_code",
"timestamp"}` with its HTTP status (`errors.py`). docs/api.md shows every endpoint.
"""
