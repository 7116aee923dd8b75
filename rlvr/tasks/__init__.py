"""Tasks: dataset adapters, the built-in arith task and tiny model, SFT warm start, eval data."""
