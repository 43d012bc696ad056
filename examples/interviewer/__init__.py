"""interviewer: mock interviews with speech for many candidates at once (see README.md)."""
