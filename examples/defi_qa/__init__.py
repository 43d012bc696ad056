"""defi_qa: questions answered over a DeFi dataset loaded once and shared read-only by every run."""
