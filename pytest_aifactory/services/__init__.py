"""Services under test: specs, the catalog of builders, readiness probes and the servers run in jobs."""
