"""The control channel: web workers ask the supervisor for what only it can do.

The workers run unprivileged and share nothing but read-only memory; some requests need root
(open a capture on another interface, write the users file) or state common to all workers
(refresh tokens, single-use tickets, failed-login counts). The supervisor serves them on a Unix
socket in the state directory, root's with the web user's group, and answers only the web
workers it started (`server.py`); each request carries the user's own credential, which the
supervisor checks itself (`protocol.py`, `handlers.py`).
"""
