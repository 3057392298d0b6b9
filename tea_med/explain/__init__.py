"""tea_med.explain."""
