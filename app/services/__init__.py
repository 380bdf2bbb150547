"""Use cases as plain functions: each takes a session and never commits."""
