"""tea_med.networks."""
