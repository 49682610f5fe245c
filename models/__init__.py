"""Model manifests (TOML), one per model."""
