"""Training: groups of (query, positives, negatives) and their sampling, losses, and the resumable trainer."""
