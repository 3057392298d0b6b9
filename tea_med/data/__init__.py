"""tea_med.data."""
