"""The HTTP side: settings, the Litestar application, auth, command handlers and queries."""
