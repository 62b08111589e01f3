"""Tests of the web console (scoring.console), against a real registry and real event logs."""
