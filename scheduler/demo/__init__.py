"""The demo: an embedded PostgreSQL with the platform's tables and sample bookings, nothing to install."""
