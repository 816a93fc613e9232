"""Comparing models: one model's flatness profile, and tables of several."""
