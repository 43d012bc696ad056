"""fit_check: a job-fit assessment and a deep-research agent, streamed to many users at once."""
