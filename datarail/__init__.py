"""datarail: government data-sharing pipelines ("let the data run, not the people").

This package holds what every other package shares: settings (where runtime data lives,
which warehouse), typed errors, personal-data masking, the pipeline steps the DAGs call,
and the ``datarail`` command line. Nothing here imports Airflow at module level.
"""

__version__ = "0.1.0"
