"""Sharing: publish the share area (only rows that passed validation) and the sharing list
(共享清单) consumers order from, and export it. Never imports Airflow."""
