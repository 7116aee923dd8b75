"""Fused and chunked log-prob / entropy kernels, each with a plain PyTorch reference."""
