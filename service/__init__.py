"""The layerlens HTTP service: FastAPI routes, SQL persistence, artifact storage.

It never imports torch and never opens an uploaded model: uploads are
inspected and analysed by the workers (``workers/``).
"""
