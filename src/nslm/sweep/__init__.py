"""Sweeps: many trainings of one spec as an Optuna study (`nslm sweep run | worker | report`)."""
