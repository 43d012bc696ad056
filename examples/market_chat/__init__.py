"""market_chat: a market-data chatbot with a memory per conversation (see README.md)."""
