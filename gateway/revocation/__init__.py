"""Revocation: statements in flight per user, and cancelling them when access goes."""
