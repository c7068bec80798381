"""Training commands: each builds a TRL config + trainer from a recipe (sft, inject, score, dpo, ppo,
rejection_sample)."""
