"""Accounts: password hashes, editing the users file, and the login/refresh/ticket service.

Everything here is pure or file-based; the control server (`leireye.control`) runs the service
inside the supervisor, the only process that may write the users file and keep shared state.
"""
