"""Real Singer targets for the round-trip and chaos tests: installing them, running pipelines, comparing tables."""
