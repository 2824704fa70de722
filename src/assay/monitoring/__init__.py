"""Monitoring: the prediction log, reference profiles, drift, performance, detectors and alerts."""
