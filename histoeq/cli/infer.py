"""CLI for deployment: `histoeq export`, `histoeq predict`, `histoeq bench predict` (thin: parse, call, print)."""

from __future__ import annotations

from pathlib import Path

import typer

from histoeq.cli import app, bench_app, refuse_existing
from histoeq.cli._render import console, print_table, rich_progress
from histoeq.infer.model_index import default_model_name

_EXPORT_EPILOG = """\
[bold]Examples[/bold]

  histoeq export runs/p4m --out p4m.onnx
  # half precision, for GPUs
  histoeq export runs/p4m --out p4m-fp16.onnx --fp16

  # with the test-split metrics of
  # histoeq eval runs/p4m --data idc --split test --out eval/
  histoeq export runs/p4m --out p4m.onnx --test-metrics eval/eval.json

  # three seeds as one model (mean probability; exactly invariant when
  # every member is)
  histoeq export runs/p4m-s0 runs/p4m-s1 runs/p4m-s2 --out p4m-x3.onnx

  # a CNN made exactly D4-invariant by averaging its 8 views
  histoeq export runs/cnn --out cnn-d4.onnx --invariant-to d4

  # with the operating point chosen by cross-validation, which predict
  # then uses by default
  histoeq export runs/p4m --out p4m.onnx --threshold 0.42 \\
      --context binomial3 --chosen-by "pooled OOF BA, 5-fold CV"
"""


@app.command("export", epilog=_EXPORT_EPILOG)
def export_command(
    runs: list[Path] = typer.Argument(
        ..., help="Training run folder (its best.pt) or checkpoint file; several make one mean-probability ensemble."),
    out: Path = typer.Option(..., "--out", "-o", help="ONNX file to write (one self-contained file)."),
    opset: int = typer.Option(18, "--opset", help="ONNX opset."),
    fp16: bool = typer.Option(False, "--fp16", help="Half-precision weights (checked at 1e-2 instead of 1e-4/1e-5)."),
    val_metrics: Path | None = typer.Option(
        None, "--val-metrics", help="eval.json of this model on the validation split (replaces the run's own)."),
    test_metrics: Path | None = typer.Option(
        None, "--test-metrics", help="eval.json of this model on held-out data, stored in the metadata."),
    invariant_to: str | None = typer.Option(
        None, "--invariant-to", help="d4: average the probabilities over the rotations/mirrors the model's group "
        "lacks (2 views for se2/p4, 8 for cnn, none for p4m), making the file exactly D4-invariant."),
    mpp: float | None = typer.Option(
        None, "--mpp", help="µm/px of the training patches, for runs on a dataset imported without --mpp."),
    threshold: float | None = typer.Option(
        None, "--threshold", help="Operating point stored in the model: the region threshold predict uses by default, "
        "in (0, 1).", show_default="none stored"),
    context: str | None = typer.Option(
        None, "--context", help="Operating point: the context kernel predict uses by default (none, box3, binomial3, "
        "binomial5); needs --threshold.", show_default="none"),
    chosen_by: str | None = typer.Option(
        None, "--chosen-by", help="How the operating point was chosen (free text, stored with it); needs --threshold."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing file at --out (refused without)."),
) -> None:
    """Export a trained model (or a seed ensemble) to ONNX (plain operators, uint8 tiles in), verified in onnxruntime
    before writing."""
    from histoeq.export.exporter import export_run, operating_point_from_options

    point = operating_point_from_options(threshold, context, chosen_by)
    refuse_existing([out], overwrite)
    with rich_progress(transient=True) as progress:
        result = export_run(runs, out, opset=opset, fp16=fp16, val_metrics=val_metrics, test_metrics=test_metrics,
                            invariant_to=invariant_to, mpp=mpp, operating_point=point, progress=progress)
    v, m = result.verification, result.metadata
    inv = ("not claimed (no group)" if v.invariance_max_abs is None
           else f"{v.invariance_group} max |Δp| {v.invariance_max_abs:.1e}")
    console.print(
        f"wrote {result.path} ({result.size_bytes / 1e6:.2f} MB, {m.precision}, {m.model_name} on {m.group['name']}, "
        f"classes {','.join(m.classes)}, {m.tile_px} px at {m.mpp:g} µm/px)\n"
        f"checked on {v.patches} in onnxruntime {v.onnxruntime_version}: ORT vs torch max |Δp| "
        f"{v.agreement_max_abs:.1e} (≤ {v.agreement_tolerance:.0e}); invariance {inv}"
        + ("" if m.operating_point is None else f"\noperating point: {m.operating_point.describe()}"),
        soft_wrap=True, markup=False,
    )


_PREDICT_EPILOG = """\
[bold]Examples[/bold]

  # every slide of a folder with the shipped model, on the GPU
  histoeq predict slides/*.svs --out predictions --device cuda

  # slides without resolution metadata, overlapping tiles, as job 2 of 4
  # of an array job
  histoeq predict slides/*.tiff --model models/idc-se2.onnx \\
      --slide-mpp 0.25 --stride 25 --shard 1/4 --out preds

  # a cohort listed in a file (one path per line), or a folder
  histoeq predict cohort.txt --out predictions
  histoeq predict /data/slides --out predictions

  # only the tile CSV (and the JSON record); a later run without
  # --outputs adds the GeoJSON and heatmap
  histoeq predict slides/*.svs --outputs csv --out predictions

  # each tile's probability also combined with its neighbours'
  histoeq predict slides/*.svs --context binomial3 --out predictions
"""


@app.command("predict", epilog=_PREDICT_EPILOG)
def predict_command(
    slides: list[str] = typer.Argument(..., help="Whole-slide images (SVS, TIFF, NDPI, ...), folders of them, "
                                       "quoted glob patterns, or .txt lists with one path per line."),
    model: str | None = typer.Option(None, "--model", "-m", help="Exported ONNX model file, or a name in "
                                     "models/index.json.", show_default=default_model_name()),
    out: Path = typer.Option(Path("predictions"), "--out", "-o", help="Output folder; slides already complete there "
                             "with this model and these options are skipped, so rerunning resumes."),
    device: str = typer.Option("auto", "--device", help="auto, cuda or cpu (cuda without a CUDA provider: error)."),
    batch_size: int = typer.Option(256, "--batch-size", help="Tiles per model call."),
    stride: int | None = typer.Option(None, "--stride", help="Model pixels between tiles.",
                                      show_default="the tile size"),
    slide_mpp: float | None = typer.Option(None, "--slide-mpp", help="Level-0 µm/px of the slides when metadata "
                                           "lacks it (or is wrong)."),
    min_tissue: float = typer.Option(0.25, "--min-tissue", help="Score tiles whose tissue fraction is at least this "
                                     "(0 scores every tile)."),
    shard: str | None = typer.Option(None, "--shard",
                                     help="i/n: this process takes every n-th slide from the i-th (0-based)."),
    workers: int | None = typer.Option(None, "--workers", help="Reader threads.", show_default="cores, 2..8"),
    outputs: str | None = typer.Option(
        None, "--outputs", help="Comma-separated outputs per slide, from csv, geojson, heatmap, tissue (the tissue "
        "mask PNG), regions (tumour regions as QuPath annotations); the JSON run record is always written. A rerun "
        "writes the ones a slide still lacks.", show_default="csv,geojson,heatmap,tissue"),
    region_threshold: float | None = typer.Option(
        None, "--region-threshold", help="Tiles with p at or above this form the tumour regions and the positive "
        "area in the JSON summary. Default: the model's operating point (the threshold chosen for it and stored at "
        "export), else 0.5.", show_default="from the model, else 0.5"),
    context: str | None = typer.Option(
        None, "--context", help="Also combine each tile's probability with its grid neighbours' (none, box3, "
        "binomial3, binomial5): an extra prob_<class>_<kernel> column, and the heatmap shows it. Default: the "
        "model's operating point, else none.", show_default="from the model, else none"),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace outputs in --out made with another model or "
                                   "other options (refused without it)."),
) -> None:
    """Tile-level predictions for whole slides: CSV, QuPath GeoJSON, heatmap PNG and a JSON run record per slide."""
    from histoeq.infer import PredictOptions, predict_slides
    from histoeq.infer.model_index import resolve_model
    from histoeq.infer.outputs import parse_outputs
    from histoeq.slide.inputs import expand_slides

    options = PredictOptions(batch_size=batch_size, stride_px=stride, mpp=slide_mpp, tissue_threshold=min_tissue,
                             outputs=parse_outputs(outputs), context=context, region_threshold=region_threshold)
    if workers is not None:
        options.workers = workers
    with rich_progress(transient=True) as progress:
        loaded, results = predict_slides(
            expand_slides(slides), resolve_model(model), out, device=device, options=options,
            shard=shard, progress=progress, overwrite=overwrite,
        )
    empty = [r for r in results if not r.skipped and r.tiles == 0]
    rows = [
        (Path(r.slide).name, "skipped (complete)" if r.skipped else "no tissue found" if r.tiles == 0 else "done",
         r.tiles, round(r.seconds, 2), round(r.tiles_per_s))
        for r in results
    ]
    print_table(f"predict → {out}", ["slide", "status", "tiles", "seconds", "tiles/s"], rows)
    for r in empty:
        if r.no_tissue:
            console.print(f"{Path(r.slide).name}: {r.no_tissue}; its outputs are empty", soft_wrap=True,
                          markup=False, highlight=False)
    console.print(f"model {loaded.path} ({loaded.metadata.model_name}), execution provider: {loaded.provider}",
                  soft_wrap=True)
    point = loaded.metadata.operating_point
    if point is not None:
        console.print(f"model operating point: {point.describe()}; an explicit --region-threshold or --context wins",
                      soft_wrap=True, markup=False, highlight=False)


@bench_app.command("predict")
def bench_predict_command(
    slide: Path = typer.Argument(..., help="A whole-slide image."),
    model: str | None = typer.Option(None, "--model", "-m", help="Exported ONNX model file, or a name in "
                                     "models/index.json.", show_default=default_model_name()),
    device: str = typer.Option("auto", "--device", help="auto, cuda or cpu."),
    batch_size: int = typer.Option(256, "--batch-size"),
    workers: int | None = typer.Option(None, "--workers", help="Reader threads.", show_default="cores, 2..8"),
    min_tissue: float = typer.Option(0.25, "--min-tissue", help="Score tiles whose tissue fraction is at least this."),
    slide_mpp: float | None = typer.Option(None, "--slide-mpp", help="Level-0 µm/px of the slide when metadata "
                                           "lacks it."),
) -> None:
    """Read-only, model-only, pipeline and end-to-end tiles/s and peak RSS for one slide."""
    from histoeq.infer import OnnxTileModel, PredictOptions
    from histoeq.infer.bench import bench_predict
    from histoeq.infer.model_index import resolve_model

    options = PredictOptions(batch_size=batch_size, tissue_threshold=min_tissue, mpp=slide_mpp)
    if workers is not None:
        options.workers = workers
    loaded = OnnxTileModel(resolve_model(model), device)
    with rich_progress(transient=True) as progress:
        result = bench_predict(slide, loaded, options, progress)
    rows = [
        (phase, round(rate), result.seconds[phase], round(result.peak_rss_mb[phase]))
        for phase, rate in result.rates.items()
    ]
    print_table(
        f"{slide.name} {result.dimensions[0]}x{result.dimensions[1]}, {result.tiles} tiles, {result.provider}, "
        f"batch {result.batch_size}, {result.workers} readers",
        ["phase", "tiles/s", "seconds", "peak RSS MB"],
        rows,
    )
    console.print(
        f"pipeline / min(read-only, model-only) = {result.overlap_ratio:.2f}; "
        f"RSS before: {result.baseline_rss_mb:.0f} MB"
    )
