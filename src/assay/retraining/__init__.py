"""Continuous training: challengers retrained from the data as it is now, judged against the champion."""
