"""Continuous backup's coordinator half: which agent captures, the segments it writes, the window."""
