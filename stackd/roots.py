"""The default state and run roots, for the two places that pick roots: the CLI (stackd.cli.roots)
and the thin client (stackd.client). Nothing else defaults: the engine always gets its roots."""

DEFAULT_STATE_ROOT = "/var/lib/stackd"
DEFAULT_RUN_ROOT = "/run/stackd"
