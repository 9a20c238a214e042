"""rag: private chat with your documents (LlamaIndex engine, Chroma index, Chainlit UI)."""
