"""KV cache: paged block accounting and automatic prefix caching."""
