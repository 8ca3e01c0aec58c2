"""llem_core: campaigns, grids, plans and measured LLM inference experiments.

Pure Python with no Airflow import: it runs inside the experiment containers too.
"""

__all__ = ["__version__"]
__version__ = "0.1.0"
