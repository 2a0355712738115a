"""The stackd daemon: a warm engine behind a Unix socket (see server.py; the client is stackd.client)."""
