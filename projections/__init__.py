"""Views derived from the log: MongoDB read models, the audit log and the warehouse."""
