"""`histoeq models`, `histoeq bench layers`, `histoeq bench equivariance`."""

from __future__ import annotations

import typer

from histoeq.cli import app, bench_app
from histoeq.cli._render import console, print_table, rich_progress

_MODELS_EPILOG = """\
[bold]Examples[/bold]

  histoeq models
"""


@app.command("models", epilog=_MODELS_EPILOG)
def models_command() -> None:
    """List the registered models: group, |G|, parameters, MACs at the default tile, exact transformations."""
    from histoeq.models.summary import model_table

    rows = model_table()
    print_table(
        "histoeq models (default tile 50 px at 4 µm/px)",
        ["name", "group", "|G|", "fields", "params", "MMACs", "exact under"],
        [[r.name, r.group, r.order, "/".join(map(str, r.widths)), f"{r.params:,}", f"{r.macs / 1e6:.1f}", r.exact]
         for r in rows],
    )


@bench_app.command("layers")
def bench_layers_command(
    batch_size: int = typer.Option(32, "--batch-size", help="Batch of tiles per step."),
    tile_px: int = typer.Option(50, "--tile-px"),
    repeats: int = typer.Option(10, "--repeats", help="Timed repetitions (median reported)."),
    device: str = typer.Option("cpu", "--device"),
) -> None:
    """Train step and eval forward of p4m / se2 vs a plain CNN of equal expanded width and the matched cnn."""
    from histoeq.lab.bench_layers import bench_layers

    with rich_progress(transient=True) as progress:
        rows = bench_layers(batch=batch_size, tile_px=tile_px, repeats=repeats, device=device, progress=progress)
    print_table(
        f"layer benchmark: batch {batch_size}, {tile_px} px, {device}, median of {repeats}",
        ["model", "params", "train ms", "eval ms", "train ×ref", "eval ×ref", "reference"],
        [[r.model, f"{r.params:,}", f"{r.train_ms:.1f}", f"{r.eval_ms:.1f}",
          "" if r.train_ratio is None else f"{r.train_ratio:.3f}",
          "" if r.eval_ratio is None else f"{r.eval_ratio:.3f}",
          r.reference] for r in rows],
    )


@bench_app.command("equivariance")
def bench_equivariance_command(
    angle: float = typer.Option(45.0, "--angle", help="Rotation angle in degrees (bilinear)."),
    seeds: int = typer.Option(8, "--seeds", help="Random initialisations per model."),
    orientations: int = typer.Option(8, "--orientations"),
    tile_px: int = typer.Option(50, "--tile-px"),
) -> None:
    """The 45° protocol: random-weight models, σ=2 px noise in the disk, relative logit error."""
    from histoeq.lab.bench_equivariance import bench_angle_error

    with rich_progress(transient=True) as progress:
        rows = bench_angle_error(angle, tile_px, seeds, orientations, progress=progress)
    print_table(
        f"relative logit error at {angle:g}° ({seeds} inits, {tile_px} px)",
        ["model", "filter method", "input rotation", "mean", "sd", "median"],
        [[r.model, r.method, r.interpolation, f"{r.mean:.4f}", f"{r.sd:.4f}", f"{r.median:.4f}"] for r in rows],
    )
    console.print("protocol: histoeq.models.equivariance.rotation_error")


_DOCTOR_EPILOG = """\
[bold]Example[/bold]

  histoeq doctor
"""


@app.command("doctor", epilog=_DOCTOR_EPILOG)
def doctor_command() -> None:
    """Check this installation: versions, slide readers, ONNX Runtime providers, CUDA, CPU cores, default model."""
    from histoeq.lab.doctor import diagnose

    for section in diagnose():
        console.print(f"[bold]{section.title}[/bold]")
        for item in section.items:
            console.print(f"  {item.name}: {item.value}" + ("" if item.ok else "  [!]"), markup=False,
                          highlight=False, soft_wrap=True)
