"""MinAtar as batched torch operations (see game.py for the contract of a game)."""
