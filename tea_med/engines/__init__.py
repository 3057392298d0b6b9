"""tea_med.engines."""
