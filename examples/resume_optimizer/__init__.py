"""resume_optimizer: a long multi-stage pipeline whose progress survives reconnects and buffering proxies."""
