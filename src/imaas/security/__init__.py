"""Keys, rate limits and quotas: pure logic and counters, no registry access (layer 2)."""
