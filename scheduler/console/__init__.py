"""The operator's console: `status`, `runs`, `messages`, `resend`, `cancel`, `pause`, `resume`
(CONTRACT §3). Short commands over one database connection, loading no more than they need."""
