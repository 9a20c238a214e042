"""Browser tests of the chat: fixtures live in tests/conftest.py, tests/browser.py and testkit/."""
