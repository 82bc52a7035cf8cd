"""DB-backed percentage rollout flags (DESIGN §7). Not installed yet: it lands with its own issue."""
