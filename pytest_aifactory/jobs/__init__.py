"""Service jobs: submitit backends, the job side (runner, monitor, log forwarder), registry, manager, run."""
