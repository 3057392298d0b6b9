"""tea_med.evaluation."""
