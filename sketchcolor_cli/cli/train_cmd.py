"""`sketchcolor train CONFIG.yaml` (placeholder while the loop is written)."""
import typer


def register(app: typer.Typer) -> None:
    pass
