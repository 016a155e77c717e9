"""Metrics leadership reads (数据共享比例, 事项全流程满足率, 数据提供率, 数据结构化率, 数据交换量,
quality-loop counts): computed as snapshots per run date in the warehouse and exported as
CSV and an Excel bulletin. Never imports Airflow."""
