"""The load engine: arrival schedules, the async engine, worker processes and multi-node shards."""
