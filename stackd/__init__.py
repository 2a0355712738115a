"""stackd: a declarative, Compose-compatible orchestrator on its own container engine."""

__version__ = "0.1.0"
