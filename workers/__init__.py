"""Celery workers: claim a job, run the engine in a child process, persist the results.

Thin by design: all science lives in ``layerlens/``.
"""
