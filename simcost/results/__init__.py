"""Writing a run: results folder, FOCUS bill, figures."""
