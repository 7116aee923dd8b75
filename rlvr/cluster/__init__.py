"""Ray wiring: actors, the vLLM cluster, GPU placement."""
