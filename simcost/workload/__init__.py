"""What arrives: arrival processes, token lengths, traces, sessions, and the per-request table."""
