"""Many workers: batch restoration on Ray Data (`ray_batch`) and an online endpoint on Ray Serve
(`service`). Both hold `ilo.Restorer`s; Ray comes in with the `[ray]` extra."""
