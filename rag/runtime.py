"""Process-wide guards for the model libraries: one model load at a time."""

from __future__ import annotations

import threading

# transformers switches torch's process-global default dtype while it builds a model, so two
# models loading at once in different threads (the embedder for the start-up sync, the LLM being
# warmed up) can corrupt each other: an LLM then answers with random tokens or NaNs. Every model
# load in this process goes through this lock.
MODEL_LOADING = threading.RLock()
