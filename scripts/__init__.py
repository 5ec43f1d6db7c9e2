"""Scripts of ``make run`` and friends. They run as scripts (``python scripts/run.py``) and
import each other as top-level modules; ``tests`` and ``bench`` import ``scripts.servers``."""
