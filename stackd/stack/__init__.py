"""Stack use-cases: what `stackd up/down/ps/…` do, between the command line and the executor."""
