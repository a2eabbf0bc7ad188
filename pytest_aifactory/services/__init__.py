"""Services under test: specs, readiness probes, the catalog and the manager."""
