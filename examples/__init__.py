"""Small complete runyard apps, one per real use case; each runs offline against
simulated services on loopback (see each folder's README.md)."""
