"""Data quality: identifier rules, reference lists, type coercion, Great Expectations suites
built from the catalog, feedback tickets and quality reports. Never imports Airflow."""
