"""tea_med.deploy."""
