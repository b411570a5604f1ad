"""Folder runs: their folders, outputs, result files, progress and charts."""
