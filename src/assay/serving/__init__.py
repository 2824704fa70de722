"""Serving: the one scoring path (HTTP, CLI batch), feature lookups, score caches, API tokens
and explanations of single scores."""
