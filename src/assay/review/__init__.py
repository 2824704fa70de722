"""Human review: accounts, campaigns, worksets and labels, JADE-style judgments and agreement."""
