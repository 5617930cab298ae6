"""The lab cluster: a whole kubepy cluster on one Linux host (``kubepy up``)."""
