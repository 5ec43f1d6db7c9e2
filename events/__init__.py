"""The event log: event types, envelope and codec, upcasters, schemas and the Redis event store."""
