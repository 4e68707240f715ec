"""Training machinery: configs, the loop, evaluation, optimisers and schedules, checkpoints."""
