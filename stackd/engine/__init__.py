"""The container engine: images, volumes, containers, shims and the OCI runtime."""
