"""Messages to people: what is owed (outbox), how it is worded (templates) and how it travels (transports)."""
