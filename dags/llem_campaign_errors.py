"""Airflow DAG file that turns campaign files that cannot become DAGs into one import error.

The DAGs of valid campaigns come from llem_campaigns.py and keep loading; this file
raises, naming each bad file, field path and reason, so Airflow shows it as a DAG
import error instead of the campaign vanishing silently. Both files use the same
function (:func:`llem_airflow.factory.build_dags`), so they agree on every file.
"""

from llem_airflow.factory import campaign_errors


class CampaignFileInvalid(Exception):
    pass


_errors = campaign_errors()
if _errors:
    raise CampaignFileInvalid("invalid llem campaign file(s):\n" + "\n".join(_errors))
