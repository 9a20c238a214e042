"""The LLM backends: each module is one RAG_LLM value and defines its Backend as `BACKEND`."""
