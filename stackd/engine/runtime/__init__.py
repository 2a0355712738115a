"""stackd-runtime: a runc-style OCI runtime (synchronous, single-threaded, never imports trio)."""
