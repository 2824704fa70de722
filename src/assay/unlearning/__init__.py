"""Forgetting on request: deletion requests and their audit, exclusions, sharded (SISA) training."""
