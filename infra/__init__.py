"""What the HTTP service and the workers share: settings (``config``), the SQL database
(``db``: models, sessions, the job state machine), blob storage (``storage``) and the
Celery configuration with its send-only queue client (``queue``).

It imports neither ``service`` nor ``workers`` (both import it), and never torch.
"""
