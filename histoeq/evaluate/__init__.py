"""Evaluation under rotations: `rotation_eval.evaluate_predictor` (any uint8-batch -> probabilities callable),
`report.evaluate_runs` (what `histoeq eval` runs), the rotation views, slide context and metrics."""
