"""Chainlit entry point (UI only): thin handlers that call into `rag`. The chat UI is being built."""
