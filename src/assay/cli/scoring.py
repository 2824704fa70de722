"""CLI commands of the scoring service (serve, score, tokens, feature tables, precache)."""
