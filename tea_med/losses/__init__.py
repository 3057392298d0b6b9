"""tea_med.losses."""
