"""Records, the metric table, SLOs, profiles, errors and secret masking: no I/O beyond reading profiles."""
