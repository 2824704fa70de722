"""CLI commands of human review (users, campaigns, labels)."""
