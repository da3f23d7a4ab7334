"""Monitoring: drift of the service's logged traffic against the test-set reference."""
