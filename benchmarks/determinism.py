"""Is a CPU training run of the reproduction protocol bit-identical when repeated?

The protocol-2 teacher retrained with the same code, data and seed drifted from the recorded one
(identical English dev F1 at steps 100 and 200, then not). This script trains the first N steps of
that teacher twice per environment, each run in its own process, and compares every weight of the
two models: bitwise, and by the largest absolute difference. Environments:

    default     the environment as it is (what the reproduction runs used)
    mkl_cbwr    MKL_CBWR=COMPATIBLE: Intel MKL's conditional numerical reproducibility, which
                fixes the code path MKL takes independently of memory alignment and CPU dispatch
    threads1    OMP_NUM_THREADS=1 and MKL_NUM_THREADS=1: no parallel reductions at all

    python benchmarks/determinism.py --steps 30 [--modes default mkl_cbwr threads1] [--with-evaluation]

By default the runs skip the teacher's evaluations on the English dev set (to save time);
--with-evaluation keeps them (every 100 steps, full dev set), as the recorded teacher ran, and
records each run's dev F1 curve.

Needs the protocol-2 CoNLL corpus and the encoder (reproduce.py prepare --protocol 2; convert-encoder).
Writes benchmarks/results/determinism-<N>steps[-eval].{json,md}.
"""
import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Dict

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reproduce  # noqa: E402

MODES: Dict[str, Dict[str, str]] = {
    "default": {},
    "mkl_cbwr": {"MKL_CBWR": "COMPATIBLE"},
    "threads1": {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
}


def weights(model_dir: Path) -> Dict[str, "numpy.ndarray"]:
    """Every trainable array of a saved pipeline: Thinc params and the torch modules in its shims."""
    import spacy

    nlp = spacy.load(model_dir)
    arrays = {}
    for pipe_name, pipe in nlp.pipeline:
        for i, node in enumerate(pipe.model.walk()):
            for param in node.param_names:
                if node.has_param(param):
                    arrays[f"{pipe_name}/{i}:{node.name}/{param}"] = node.ops.to_numpy(node.get_param(param))
            for j, shim in enumerate(node.shims):
                module = getattr(shim, "_model", None)
                if hasattr(module, "state_dict"):
                    for key, tensor in module.state_dict().items():
                        arrays[f"{pipe_name}/{i}:{node.name}/shim{j}/{key}"] = tensor.detach().cpu().numpy()
    return arrays


def compare(a: Dict, b: Dict) -> dict:
    import numpy

    assert a.keys() == b.keys(), "the two runs saved different parameters"
    differing = [k for k in a if not numpy.array_equal(a[k], b[k])]
    max_abs = max((float(numpy.abs(a[k].astype("float64") - b[k].astype("float64")).max()) for k in differing), default=0.0)
    return {"arrays": len(a), "arrays_differing": len(differing), "max_abs_diff": max_abs,
            "bit_identical": not differing, "first_differing": differing[:5]}


def markdown(results: dict) -> str:
    lines = ["# Repeated CPU training runs: bit-identical?", "",
             f"The first {results['steps']} steps of the protocol-2 CoNLL teacher, trained twice per environment "
             f"(separate processes, same seed), every weight compared; "
             + ("with the teacher's evaluations on the full English dev set every "
                f"{results['eval_frequency']} steps. " if results.get("eval_frequency") else "evaluations skipped. ")
             + f"Machine: {results['machine']['processor']}, "
             f"{results['machine']['cpu_count']} cores, no GPU; {results['date']}."
             + (f" Note: {results['note']}." if results["note"] else ""), "",
             "| environment | settings | arrays differing | largest abs. difference | wall s (a / b) |", "|---|---|---|---|---|"]
    for mode, r in results["modes"].items():
        settings = ", ".join(f"{k}={v}" for k, v in r["env"].items()) or "as is"
        lines.append(f"| {mode} | {settings} | {r['arrays_differing']} of {r['arrays']} | {r['max_abs_diff']:.3g} "
                     f"| {r['runs'][0]['wall_s']} / {r['runs'][1]['wall_s']} |")
    curves = [(mode, rep, run["dev_curve"]) for mode, r in results["modes"].items()
              for rep, run in zip("ab", r["runs"]) if run.get("dev_curve")]
    if curves:
        steps = [point["step"] for point in curves[0][2]]
        lines += ["", "English dev F1 at each evaluation:", "",
                  "| run | " + " | ".join(f"step {s}" for s in steps) + " |", "|---|" + "---|" * len(steps)]
        for mode, rep, curve in curves:
            lines.append(f"| {mode} {rep} | " + " | ".join(f"{point['dev_f1']:.2f}" for point in curve) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--modes", nargs="+", choices=sorted(MODES), default=list(MODES))
    parser.add_argument("--work", type=Path, default=reproduce.REPO / "benchmarks" / ".cache" / "reproduce" / "protocol2" / "conll")
    parser.add_argument("--encoder", type=Path, default=reproduce.REPO / "benchmarks" / ".cache" / "multilingual-e5-small")
    parser.add_argument("--with-evaluation", action="store_true",
                        help="keep the teacher's evaluations on the full dev set (skipped by default)")
    parser.add_argument("--note", help="recorded in the results, e.g. what ran beside")
    args = parser.parse_args()
    work, protocol = args.work.resolve(), reproduce.PROTOCOLS[2]
    corpus = work / "corpus"
    if not (corpus / "en_train.spacy").exists():
        sys.exit(f"No corpus in {corpus}: python benchmarks/reproduce.py prepare --protocol 2 --corpus conll")
    scratch = work / "determinism"
    scratch.mkdir(parents=True, exist_ok=True)
    eval_frequency = protocol["eval_frequency_steps"] if args.with_evaluation else None
    results = {"steps": args.steps, "eval_frequency": eval_frequency, "machine": reproduce.machine(),
               "note": args.note, "date": time.strftime("%Y-%m-%d"), "modes": {}}
    for mode in args.modes:
        env = {**os.environ, **MODES[mode]}
        runs = []
        for rep in ("a", "b"):
            out = scratch / f"{mode}-{rep}"
            shutil.rmtree(out, ignore_errors=True)
            # the teacher's own command and schedule, stopped after --steps
            cmd, _ = reproduce.teacher_command(work, protocol, "en", args.encoder.resolve(), out)
            cmd += ["--training.max_steps", str(args.steps)]
            if not eval_frequency:
                # spaCy evaluates once at step 0 whatever the frequency: keep that cheap
                cmd += ["--training.eval_frequency", str(args.steps + 1), "--corpora.dev.limit", "10"]
            # wall time, peak RSS and the code's commit (run_measured exits on a failed run)
            log = scratch / f"{mode}-{rep}.log"
            runs.append({**reproduce.run_measured(cmd, log, env),
                         **({"dev_curve": reproduce.dev_curve(log)} if eval_frequency else {})})
            print(f"{mode} run {rep}: {runs[-1]['wall_s']} s", flush=True)
        comparison = compare(weights(scratch / f"{mode}-a" / "model-last"), weights(scratch / f"{mode}-b" / "model-last"))
        results["modes"][mode] = {"env": MODES[mode], "runs": runs, **comparison}
        print(mode, json.dumps(comparison), flush=True)
    name = f"determinism-{args.steps}steps" + ("-eval" if eval_frequency else "")
    out_json = reproduce.RESULTS / f"{name}.json"
    out_json.write_text(json.dumps(results, indent=2) + "\n")
    (reproduce.RESULTS / f"{name}.md").write_text(markdown(results))
    print("wrote", out_json)


if __name__ == "__main__":
    main()
