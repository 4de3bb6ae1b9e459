"""`python -m simcost.cli.main`: the same as the `simcost` command."""

from simcost.cli.main import entry

entry()
