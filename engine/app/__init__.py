"""The application: restore runs, their folders, image files and measurements."""
