"""llem_airflow: the Airflow side of llem (DAG factory, operators, sensors, plugin)."""
