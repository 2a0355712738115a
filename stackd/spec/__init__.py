"""Loading stack files as the Compose Specification defines them (a pipeline of pure stages)."""
