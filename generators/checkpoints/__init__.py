"""Checkpoint formats: reading them into staged generators and writing them back."""
