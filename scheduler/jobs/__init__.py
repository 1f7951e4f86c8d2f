"""The jobs: plain async functions of (context, now) that return a JobResult."""
