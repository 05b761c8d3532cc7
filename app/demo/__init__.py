"""``layerlens demo``: the demo model (``model``, torch) and its run through the embedded
service's HTTP API (``run``, no torch)."""
