"""Shared fixtures of the bench suite; see bench/README.md (written with the bench reporter)."""
