"""Numbers from a finished run: latency summaries, SLOs, unit costs, time series."""
