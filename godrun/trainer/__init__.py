"""Trainer for mamba_tiny_uv. Kept import-light: submodules import torch, this package does not."""
