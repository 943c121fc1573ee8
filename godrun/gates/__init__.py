"""Panel metrics, the four readiness gates, the verdict and the checkpoint ranking.

One home for the rules that both the trainer and the evaluator apply.
"""
