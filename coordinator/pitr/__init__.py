"""Point-in-time restore: a full snapshot plus the captured changes, replayed into a new snapshot."""
