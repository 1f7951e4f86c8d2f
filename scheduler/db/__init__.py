"""Everything that speaks SQL: the engine, the table definitions, the migrations and the named queries."""
