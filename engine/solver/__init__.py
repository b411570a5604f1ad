"""The ILO solver and the baselines it is compared with."""
