"""The user-facing API: sessions and lazy DataFrames."""
