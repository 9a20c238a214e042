"""What tests and benchmarks share: the real app on a free port, Chainlit's chat protocol, PDFs."""
