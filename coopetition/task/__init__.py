"""The few-shot task: sequence samplers, fixed evaluator sets and the per-sequence metrics."""
