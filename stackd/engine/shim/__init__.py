"""stackd.engine.shim."""
