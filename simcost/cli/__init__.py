"""The `simcost` command."""
