"""Typer commands that live outside cli.py (each imports heavy modules lazily)."""
