"""Catalogs (devices.yaml, models.yaml) and example scenarios, installed as simcost.configs."""
