"""Scaling analysis of mtmoe: intrinsic performance and power-law fits (Hilton et al. 2023)."""
