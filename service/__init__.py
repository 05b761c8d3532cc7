"""The layerlens HTTP service: the FastAPI app, its routes, schemas, API keys and metrics.

Settings, the database, storage and the queue client come from ``infra`` (shared with
the workers). It never imports torch or ``workers``, and never opens an uploaded model:
uploads are inspected and analysed by the workers.
"""
