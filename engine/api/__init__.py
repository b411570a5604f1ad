"""The embedding API: ilo.Restorer, the methods it runs, and the DeepInverse reconstructor."""
