"""Many runs: sweeps, frontiers, sizing, levers, forecasts, commitments, reports."""
