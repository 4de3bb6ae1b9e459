"""Device, model and price catalogs (YAML data with sources and dates)."""
