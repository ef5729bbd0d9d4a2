"""Helpers of the generative suite: strategies, the schema builder, the SQL-script printer, value matchers."""
