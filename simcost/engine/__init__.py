"""One replica: scheduling, batching, KV blocks and prefix caching, decode spans."""
