"""SQL persistence: ORM models, sessions and the job state machine."""
