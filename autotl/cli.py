"""The ``autotl`` command: parse, call the API, turn an AutoTLError into one line and exit 2."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import warnings
from pathlib import Path

from .errors import AutoTLError
from .records import StudyRecord
from .search import POLICIES, PRUNERS, SAMPLERS, SearchOptions, search


def _search(args) -> int:
    names = {f.name for f in dataclasses.fields(SearchOptions)}
    given = {name: value for name, value in vars(args).items() if name in names}  # the flags named as the fields
    options = SearchOptions(
        **given, objectives=args.objective, rank=not args.no_rank, warm_start=not args.no_warm_start
    )
    result = search(args.dataset, options=options)
    print(f"best validation {result.metric}: {result.best_value:.4f}")
    print(f"best recipe: {result.best_config.describe()}")
    print(f"model: {result.model_dir}")
    chosen = StudyRecord.of(result.study).ensemble if options.ensemble else None
    if chosen is not None:
        better = chosen.ensemble_held_back - chosen.single_held_back
        print(
            f"ensemble: {result.run_dir / 'ensemble_model' if chosen.written else 'not written'} "
            f"({better:+.4f} {result.metric} against the best model on {chosen.held_back} held-back validation images"
            + (
                f", {chosen.latency_ms:.3g} ms an image against {chosen.single_latency_ms:.3g})"
                if chosen.latency_ms
                else ")"
            )
        )
    print(f"report: {result.report_path}")
    return 0


def _backbones(args) -> int:
    from .backbones import catalog

    names = args.names or None
    if args.space:
        from .space import load_space

        names = load_space(args.space).backbones()
    print("backbone,weights_from,available,detail")
    for name, source in catalog(names, args.weights_dir):
        print(f"{name},{source.kind},{'yes' if source.available else 'no'},{source.detail}")
    return 0


def _predict(args) -> int:
    from .export import image_paths, load_model, predict_files

    model = load_model(args.model, runtime=args.runtime)
    if args.top_k < 1:
        raise AutoTLError(f"--top-k must be at least 1, got {args.top_k}")
    paths = image_paths(args.paths)
    if args.out is None:  # main() made stdout write names that are not valid UTF-8 as their bytes
        predict_files(model, paths, sys.stdout, top_k=args.top_k, batch_size=args.batch_size, progress=True)
        return 0
    out = Path(args.out)
    if out.is_dir():
        raise AutoTLError(f"--out {out} is a folder: pass a file name for the CSV, e.g. predictions.csv")
    partial = out.with_name(out.name + ".partial")  # a stopped job leaves no file that looks finished
    with open(partial, "w", newline="", errors="surrogateescape") as handle:  # see predict_files
        count = predict_files(model, paths, handle, top_k=args.top_k, batch_size=args.batch_size, progress=True)
    partial.replace(out)
    print(f"{count} predictions in {out}", file=sys.stderr)
    return 0


def _evaluate(args) -> int:
    import numpy as np

    from .data import load_dataset
    from .export import load_model

    model = load_model(args.model)
    pre = model.preprocessing
    data = load_dataset(
        args.dataset,
        max_per_class=args.max_per_class,
        allow_outside_paths=args.allow_outside_paths,
        image_size=pre.size,
        cache_dir=args.cache_dir,
        progress=True,
    )
    split = args.split
    if split == "auto":
        split = "test" if data.count("test") else "all"
    idx = np.arange(len(data.labels)) if split == "all" else data.indices(split)
    if len(idx) == 0:
        raise AutoTLError(f"{args.dataset} has no {split} images: use --split all|train|val|test")
    unknown = sorted(set(data.classes) - set(model.classes))
    if unknown:
        raise AutoTLError(
            f"class {unknown[0]!r} of {args.dataset} is unknown to the model: evaluate on the same classes"
        )
    from .train import prediction_score

    column = np.array([model.classes.index(name) for name in data.classes])  # dataset label -> model output
    truth, predicted = [], []
    for images, labels in data.batches(idx, pre.size, pre.interpolation, batch_size=128):
        predicted.append(np.asarray(model.logits(images)).argmax(1))
        truth.append(column[labels.numpy()])
    truth, predicted = np.concatenate(truth), np.concatenate(predicted)
    correct = int((truth == predicted).sum())
    print(f"{split} accuracy: {correct / len(idx):.4f} ({correct}/{len(idx)} images)")
    scores = {m: prediction_score(truth, predicted, m) for m in ("macro_f1", "balanced_accuracy")}
    print(f"{split} macro_f1: {scores['macro_f1']:.4f}; balanced_accuracy: {scores['balanced_accuracy']:.4f}")
    return 0


def _load_study(args):
    import optuna

    from .search import open_storage

    run_dir = Path(args.run_dir)
    storage = args.storage or f"sqlite:///{run_dir / 'study.db'}"
    if not args.storage and not (run_dir / "study.db").is_file():
        raise AutoTLError(f"{run_dir} has no study.db: pass the run directory of a search (or --storage URL)")
    try:
        return optuna.load_study(study_name=args.study_name, storage=open_storage(storage))
    except KeyError as error:
        raise AutoTLError(
            f"no study named {args.study_name!r} in {storage.split('@')[-1]}: pass --study-name"
        ) from error


def _report(args) -> int:
    from . import report

    path = report.write(_load_study(args), Path(args.run_dir) / "report.html")
    print(path)
    return 0


def _export(args) -> int:
    from .export import read_config
    from .search import export_trial

    out = args.out or Path(args.run_dir) / f"trial_{args.trial}_model"
    if Path(out).exists() and not Path(out).is_dir():
        raise AutoTLError(f"--out {out} is a file: pass a folder for the model (it is created or replaced)")
    model_dir, stored, got = export_trial(
        _load_study(args),
        args.trial,
        out,
        run_dir=args.run_dir,
        device=args.device,
        weights_dir=args.weights_dir,
        say=lambda text: print(text, file=sys.stderr),
    )
    metric = read_config(model_dir).record.get("metric", "accuracy")
    print(f"trial {args.trial}: validation {metric} {got:.4f} (the search recorded {stored:.4f})")
    print(f"model: {model_dir}")
    return 0


class _OneLineErrors(argparse.ArgumentParser):
    """argparse that reports a bad argument in one line (and exit code 2), pointing to --help, not the whole usage."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}; see {self.prog} --help\n")


def parser() -> argparse.ArgumentParser:
    main = _OneLineErrors(prog="autotl", description="Search fine-tuning strategies for pretrained image models.")
    commands = main.add_subparsers(dest="command", required=True)
    for add in (_add_search, _add_backbones, _add_predict, _add_evaluate, _add_report, _add_export):
        add(commands)
    return main


def _add_search(commands) -> None:
    s = commands.add_parser("search", help="search fine-tuning recipes for a dataset and export the best model")
    default = SearchOptions()  # the Python API's defaults are the command's
    s.add_argument(
        "--dataset",
        required=True,
        help="image folder, CSV file (path,label[,split]) or builtin:digits | builtin:fashion-mnist",
    )
    s.add_argument(
        "--space", default=default.space, help="search space: default, quick, or a YAML file (default: %(default)s)"
    )
    s.add_argument(
        "--n-trials",
        type=int,
        default=default.n_trials,
        help="total finished trials the study should have (default: %(default)s)",
    )
    s.add_argument("--timeout", type=float, default=None, help="wall-clock budget in seconds for this run")
    s.add_argument(
        "--max-epochs", type=int, default=None, help="most epochs per trial (default: the space's max_epochs)"
    )
    s.add_argument("--seed", type=int, default=default.seed)
    s.add_argument("--device", choices=["auto", "cpu", "cuda"], default=default.device)
    s.add_argument("--out", default=None, help="run directory (default: reports/<dataset name>/); rerun to resume")
    s.add_argument("--sampler", choices=SAMPLERS, default=default.sampler, help="tpe (default) or random")
    s.add_argument(
        "--scheduler",
        choices=POLICIES,
        default=default.scheduler,
        help="how trials share the time: freeze-thaw (default: slices to the curves predicted to end highest), "
        "top-k (one slice each, then the best 2), off (each trial to its end, with --pruner)",
    )
    s.add_argument(
        "--pruner",
        choices=PRUNERS,
        default=default.pruner,
        help="with --scheduler off: hyperband (default), median or none",
    )
    s.add_argument(
        "--weights-dir", default=None, help="folder of <timm name>.safetensors|.pth weight files, tried first"
    )
    s.add_argument(
        "--workers",
        type=int,
        default=default.workers,
        help="worker processes on this machine (one per GPU; default: %(default)s)",
    )
    s.add_argument(
        "--storage",
        default=None,
        help="study storage URL, e.g. postgresql://user:pass@host/db (default: sqlite:///RUN_DIR/study.db)",
    )
    s.add_argument(
        "--study-name", default=default.study_name, help="study name inside the storage (default: %(default)s)"
    )
    _add_search_data_and_extras(s, default)
    s.set_defaults(run=_search)


def _add_search_data_and_extras(s, default: SearchOptions) -> None:
    """search's flags after the run's own: how the data is split and read, and the optional steps of a search."""
    s.add_argument(
        "--val-fraction",
        type=float,
        default=default.val_fraction,
        help="share of train held out for validation when there is no val split",
    )
    s.add_argument("--max-per-class", type=int, default=None, help="cap images per class and split, for quick runs")
    s.add_argument(
        "--allow-outside-paths",
        action="store_true",
        help="let a CSV name images outside its own folder (off by default: only for CSVs you trust)",
    )
    s.add_argument(
        "--objective",
        default=default.objectives,
        help="accuracy (default), or accuracy,latency for a multi-objective search (Pareto front in the report); "
        "'accuracy' stands for the --metric",
    )
    s.add_argument(
        "--metric",
        default=None,
        help="what trials are scored by: accuracy (default), macro_f1 or balanced_accuracy (for imbalanced classes: "
        "every class counts alike); a space file's 'metric:' is used when this is not given",
    )
    s.add_argument(
        "--drop-backbones",
        type=float,
        nargs="?",
        const=0.1,
        default=None,
        metavar="MARGIN",
        help="leave out backbones whose LogME score is more than MARGIN below the best (default margin 0.1)",
    )
    s.add_argument("--no-rank", action="store_true", help="do not rank the backbones by LogME before training")
    s.add_argument(
        "--no-warm-start", action="store_true", help="let the sampler pick every trial (no warm-start recipes first)"
    )
    s.add_argument(
        "--refit",
        action="store_true",
        help="retrain the best recipe on train + validation for as many reports as its best one before exporting",
    )
    s.add_argument(
        "--soup",
        action="store_true",
        help="average each trial's best reports greedily (a model soup), kept when validation does not drop",
    )
    s.add_argument(
        "--keep-models",
        type=int,
        default=default.keep_models,
        metavar="N",
        help="keep the weights of the N best trials in RUN_DIR/trials/, for export --trial (default: %(default)s)",
    )
    s.add_argument(
        "--ensemble",
        action="store_true",
        help="also select a greedy ensemble of those kept trials, written to RUN_DIR/ensemble_model when it beats "
        "the best model on validation images it was not selected on",
    )
    s.add_argument(
        "--compile",
        action="store_true",
        help="run training steps through torch.compile: for a GPU and long trials (on a CPU it costs "
        "a slow first epoch and gains nothing, see benchmarks/RESULTS.md)",
    )
    s.add_argument(
        "--cache-dir",
        default=None,
        help="where decoded images are cached, shared by later runs (default: ~/.cache/autotl/images)",
    )


def _add_backbones(commands) -> None:
    b = commands.add_parser("backbones", help="list candidate backbones and whether their weights are here")
    b.add_argument("names", nargs="*", help="timm model names (default: the offline catalog)")
    b.add_argument("--space", default=None, help="list the backbones of this search space instead")
    b.add_argument("--weights-dir", default=None)
    b.set_defaults(run=_backbones)


def _add_predict(commands) -> None:
    p = commands.add_parser("predict", help="predict the class of images with an exported model, as CSV rows")
    p.add_argument("--model", required=True, help="an exported model folder (RUN_DIR/best_model)")
    p.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="image files, folders (every file below them) or .csv lists with a path column",
    )
    p.add_argument("--out", default=None, help="write the CSV here (default: standard output)")
    p.add_argument("--top-k", type=int, default=1, help="also write the next most likely classes, up to K (default: 1)")
    p.add_argument(
        "--runtime",
        choices=["torch", "onnx"],
        default="torch",
        help="torch (default) or onnx: predict through ONNX Runtime with the folder's model.onnx",
    )
    p.add_argument("--batch-size", type=int, default=64, help="images per forward pass (default: 64)")
    p.set_defaults(run=_predict)


def _add_evaluate(commands) -> None:
    e = commands.add_parser("evaluate", help="accuracy of an exported model on a dataset's test (or other) split")
    e.add_argument("--model", required=True)
    e.add_argument("--dataset", required=True)
    e.add_argument(
        "--split",
        default="auto",
        choices=["auto", "all", "train", "val", "test"],
        help="auto (default): the test split when the dataset has one, else every image",
    )
    e.add_argument("--max-per-class", type=int, default=None)
    e.add_argument("--allow-outside-paths", action="store_true", help="let a CSV name images outside its folder")
    e.add_argument(
        "--cache-dir", default=None, help="where decoded images are cached (default: ~/.cache/autotl/images)"
    )
    e.set_defaults(run=_evaluate)


def _add_report(commands) -> None:
    r = commands.add_parser("report", help="rebuild RUN_DIR/report.html from the study's storage")
    r.add_argument("run_dir")
    r.add_argument("--storage", default=None, help="storage URL (default: sqlite:///RUN_DIR/study.db)")
    r.add_argument("--study-name", default="autotl")
    r.set_defaults(run=_report)


def _add_export(commands) -> None:
    x = commands.add_parser(
        "export", help="export any trial of a search as a model (its kept weights, or its recipe trained again)"
    )
    x.add_argument("run_dir")
    x.add_argument("--trial", type=int, required=True, help="the trial's number, as in the report")
    x.add_argument("--out", default=None, help="model folder (default: RUN_DIR/trial_N_model)")
    x.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    x.add_argument("--weights-dir", default=None)
    x.add_argument("--storage", default=None, help="storage URL (default: sqlite:///RUN_DIR/study.db)")
    x.add_argument("--study-name", default="autotl")
    x.set_defaults(run=_export)


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    # A file name that is not valid UTF-8 reaches Python with surrogate escapes (os.fsdecode); a strict stdout
    # stops at it with UnicodeEncodeError. surrogateescape writes the name's own bytes: the path a shell can use.
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="surrogateescape")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.formatwarning = lambda message, category, *rest: f"warning: {message}\n"
    try:
        return args.run(args)
    except AutoTLError as error:
        print(f"autotl: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "autotl: interrupted; finished trials are kept in the study, rerun the same command to resume",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
