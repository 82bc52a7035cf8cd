"""DB-backed percentage rollout flags (docs/architecture.md §7, docs/flags.md): model, pure bucketing,
evaluation, gate and admin."""
