"""The scenario: frozen dataclasses for every section, loading YAML and overrides, validation."""
