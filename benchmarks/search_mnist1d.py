"""Quality benchmark of `nndiag search`: coarse->fine random search vs plain random search, same budget.

An MLP on MNIST-1D (recipes/mnist1d-mlp.yaml). Both methods get the same number of training epochs
in total: coarse->fine spends them as the notes say (20 trials x 2 epochs, then 8 x 20 around the
best 3, no LR decay); plain random search spends them on 10 trials x 20 epochs over the full space.
To keep the test split honest, the searches select on a validation split carved from the 4,000
training examples (3,200 / 800); the winner of each is then retrained on all 4,000 for 20 epochs
and scored once on the official 1,000-example test split (published MLP test accuracy: 68%).

    python -m benchmarks.search_mnist1d                # seed 0
    python -m benchmarks.search_mnist1d --seeds 0 1 2  # several seeds (each ~2x a few minutes on 2 cores)

Writes benchmarks/results/search_mnist1d.csv and .md.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from nndiag.config.recipe import load_recipe
from nndiag.diagnostics import search
from nndiag.training.experiment import Experiment
from nndiag.training.trainer import Trainer

RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "mnist1d-mlp.yaml"
RESULTS = Path(__file__).resolve().parent / "results"
PUBLISHED_MLP = 0.68  # mnist1d README: MLP test accuracy
FINAL_EPOCHS = 20  # retraining of each method's winner on all 4,000 training examples
VAL_EXAMPLES = 800  # held out of the training split for selection


def search_data(val_examples: int = VAL_EXAMPLES) -> tuple:
    """MNIST-1D's training split cut into (train, val); the test split is never seen by the search."""
    from nndiag.zoo.datasets import mnist1d

    (x, y), _ = mnist1d()
    cut = len(x) - val_examples
    return (x[:cut], y[:cut]), (x[cut:], y[cut:])


METHODS = {
    # name: (stages, coarse trials, coarse epochs, fine trials, fine epochs)
    "coarse->fine": (("coarse", "fine"), 20, 2, 8, 20),
    "plain random": (("coarse",), 10, 20, 0, 20),
}


def budget(method: str) -> int:
    _, ct, ce, ft, fe = METHODS[method]
    return ct * ce + ft * fe


def run_method(method: str, seed: int, folder: Path) -> dict:
    stages, ct, ce, ft, fe = METHODS[method]
    overrides = [
        f"seed={seed}",
        "device=cpu",
        "data.name=null",
        "data.target=benchmarks.search_mnist1d:search_data",
        f"search.coarse.trials={ct}",
        f"search.coarse.epochs={ce}",
        f"search.fine.trials={max(ft, 1)}",
        f"search.fine.epochs={fe}",
    ]
    recipe = load_recipe(RECIPE, overrides)
    started = time.perf_counter()
    options = search.SearchOptions(stages=stages, storage=str(folder / f"{method.replace(' ', '_').replace('>', '')}-{seed}.log"))
    result = search.run(Experiment.build(recipe), options)
    search_seconds = time.perf_counter() - started
    best = result.metrics["best_params"]
    final = load_recipe(RECIPE, [f"seed={seed}", "device=cpu"]).with_overrides(
        {**best, "train.epochs": FINAL_EPOCHS, "schedule.name": "none"}
    )
    history = Trainer(Experiment.build(final), use_schedule=False).fit()
    table = result.tables["search"]
    return {
        "method": method,
        "seed": seed,
        "epochs_budget": budget(method),
        "trials": len(table),
        "diverged": int((table["status"] == "diverged").sum()),
        "search_val_acc": result.metrics["best_val_acc"],
        "test_acc": float(history.epochs["val_acc"].iloc[-1]),
        **{f"best {k}": v for k, v in best.items()},
        "search_seconds": round(search_seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 keeps timings comparable on a shared machine)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    assert budget("coarse->fine") == budget("plain random"), "both methods must get the same number of epochs"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            for method in METHODS:
                row = run_method(method, seed, Path(tmp))
                print(row, flush=True)
                rows.append(row)
    frame = pd.DataFrame(rows)
    RESULTS.mkdir(exist_ok=True)
    frame.to_csv(RESULTS / "search_mnist1d.csv", index=False)
    summary = frame.groupby("method", sort=False)[["test_acc", "search_val_acc", "search_seconds"]].mean()
    ratio = summary.loc["coarse->fine", "test_acc"] / summary.loc["plain random", "test_acc"]
    lines = [
        "# `nndiag search` on MNIST-1D: coarse->fine vs plain random search",
        "",
        "Command: `python -m benchmarks.search_mnist1d --seeds " + " ".join(map(str, args.seeds)) + "` "
        f"(CPU, {args.threads} torch thread(s)). Recipe: recipes/mnist1d-mlp.yaml (MLP 40-256-256-10, Adam; "
        "space optim.lr 1e-5..1 log, optim.weight_decay 1e-7..1e-1 log, model.args.dropout 0..0.5 linear).",
        "",
        f"Both methods get {budget('coarse->fine')} training epochs: coarse->fine = 20 x 2 + 8 x 20 (no LR decay, around the best 3); "
        "plain random = 10 x 20 over the full space. Selection on 800 examples held out of the training split; each winner is "
        f"retrained on all 4,000 for {FINAL_EPOCHS} epochs and scored once on the official 1,000-example test split.",
        "",
        "| method | seeds | test acc (mean) | search val acc (mean) | search seconds (mean) |",
        "|---|---|---|---|---|",
    ]
    for method, row in summary.iterrows():
        lines.append(
            f"| {method} | {len(args.seeds)} | {row['test_acc']:.3f} | {row['search_val_acc']:.3f} | {row['search_seconds']:.0f} |"
        )
    lines += [
        "",
        f"Ratio of test accuracy, coarse->fine / plain random: **{ratio:.3f}**. Published MLP test accuracy: {PUBLISHED_MLP:.0%}; "
        f"coarse->fine {'reaches' if summary.loc['coarse->fine', 'test_acc'] >= PUBLISHED_MLP else 'does NOT reach'} it.",
        "",
        "Per run:",
        "",
        frame.to_markdown(index=False) if _has_tabulate() else "```\n" + frame.to_string(index=False) + "\n```",
        "",
    ]
    (RESULTS / "search_mnist1d.md").write_text("\n".join(lines))
    print("\n".join(lines))


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    main()
