"""Panel metrics, the four readiness gates, the verdict and the checkpoint ranking: one home for trainer and evaluator."""
