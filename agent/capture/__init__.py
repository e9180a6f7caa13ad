"""Continuous backup's agent half: a watch of every key, buffered for the coordinator to read."""
