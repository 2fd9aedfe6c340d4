"""ors-migrate: move Genesys ORS 8.1.4 session persistence from Cassandra to Redis Cluster."""

__version__ = "0.1.0"
