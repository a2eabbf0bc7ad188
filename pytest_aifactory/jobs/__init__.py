"""Service jobs: submission through submitit, the job side, and the job registry."""
