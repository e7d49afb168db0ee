"""`make bench`: performance figures, measured rather than asserted in timed tests."""
