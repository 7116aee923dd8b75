"""Generation engines, rollout workers, prompt samplers, rollout schedules and gates."""
