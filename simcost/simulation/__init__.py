"""One run: builds the fleet from a scenario, runs SimPy, returns the result."""
