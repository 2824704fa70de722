"""The registry: immutable model versions, their safe artifacts and feature schema, aliases,
promotion gates and single-file bundles."""
