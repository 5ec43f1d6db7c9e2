"""System tests: the run script's processes, started the way `make run` starts them."""
