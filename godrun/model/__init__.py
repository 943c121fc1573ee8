"""The model both the trainer and the evaluator use: the network (mamba_tiny_uv and its selective scan), the
input normalisation and FiLM conditioning, the checkpoint's reader and writer, and inference. Kept
import-light: submodules import torch, this package does not. It imports neither the trainer nor the evaluator."""
