"""What runs in learner actors: DeepSpeed learners, weight sources, batches, lr schedule."""
