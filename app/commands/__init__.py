"""Commands of the write side: pure decisions plus handlers that load state, decide and append."""
