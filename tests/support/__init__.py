"""Test-only projections and helpers for running real projector processes."""
