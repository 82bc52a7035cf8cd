"""DB-backed percentage rollout flags (DESIGN §7): model, pure bucketing, evaluation, gate and admin."""
