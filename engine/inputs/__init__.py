"""Reading what a user brings: image files and their measurements, arrays, latents, pictures in memory."""
