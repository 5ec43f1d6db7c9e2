"""Sub-commands of the ``streamshop`` CLI, one module each."""
