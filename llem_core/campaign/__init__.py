"""Campaign definition: from a YAML file to validated configurations, a grid, a placement
and a plan (what runs, where, in which order), with the deployment's trust policy."""
