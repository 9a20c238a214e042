"""Browser tests of the chat: fixtures live in tests/conftest.py and tests/chat_server.py."""
