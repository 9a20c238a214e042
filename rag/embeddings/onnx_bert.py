"""A BERT sentence embedder as one ONNX graph, built from its safetensors weights without torch.

`build_onnx` turns a sentence-transformers folder (model.safetensors, config.json, the pooling
config) into one graph: the BERT encoder, masked mean pooling and L2 normalisation, which is what
`SentenceTransformer.encode(normalize_embeddings=True)` computes. The file is written by the small
protobuf encoder below (ONNX files are protobuf), so neither torch nor the `onnx` package is needed.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import struct
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rag.errors import ConfigError
from rag.store import free_bytes

# Bump when the graph changes: it is part of the cache stamp, so old cache files are never reused.
BUILDER_VERSION = "1"
OPSET = 17  # first opset with LayerNormalization; onnxruntime has supported it since 1.14
IR_VERSION = 8  # the IR version that goes with opset 17


# --- minimal ONNX protobuf writer -------------------------------------------------------------
# ONNX files are plain protobuf. We only need a handful of message types, so we encode them by hand
# (field numbers from onnx.proto) instead of depending on the 9 MB `onnx` wheel (+ ml_dtypes).
# Fields are written in field-number order, which is also what the official serializer does.

_FLOAT, _INT64 = 1, 7  # TensorProto.DataType
_ATTR_FLOAT, _ATTR_INT, _ATTR_INTS = 1, 2, 7  # AttributeProto.AttributeType


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int64 -> two's complement, as protobuf does
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _key(field: int, wire: int) -> bytes:
    return _varint(field << 3 | wire)


def _int(field: int, value: int) -> bytes:
    return _key(field, 0) + _varint(value)


def _bytes(field: int, value: bytes | str) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    return _key(field, 2) + _varint(len(data)) + data


def _tensor(name: str, array: np.ndarray) -> bytes:
    dtype = {np.dtype(np.float32): _FLOAT, np.dtype(np.int64): _INT64}[array.dtype]
    dims = b"".join(_int(1, d) for d in array.shape)
    # raw_data is little-endian by spec; force it so a big-endian host would still write a valid file
    raw = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
    return dims + _int(2, dtype) + _bytes(8, name) + _bytes(9, raw)


def _attribute(name: str, value: int | float | Sequence[int]) -> bytes:
    if isinstance(value, float):
        return _bytes(1, name) + _key(2, 5) + struct.pack("<f", value) + _int(20, _ATTR_FLOAT)
    if isinstance(value, int):
        return _bytes(1, name) + _int(3, value) + _int(20, _ATTR_INT)
    return _bytes(1, name) + b"".join(_int(8, v) for v in value) + _int(20, _ATTR_INTS)


def _value_info(name: str, elem_type: int, dims: Sequence[int | str]) -> bytes:
    shape = b"".join(_bytes(1, _bytes(2, d) if isinstance(d, str) else _int(1, d)) for d in dims)
    tensor_type = _int(1, elem_type) + _bytes(2, shape)
    return _bytes(1, name) + _bytes(2, _bytes(1, tensor_type))


class _Graph:
    """Collects nodes and initializers; names are generated in order so output is deterministic."""

    def __init__(self) -> None:
        self.nodes: list[bytes] = []
        self.inits: list[bytes] = []
        self._count = 0

    def const(self, array: np.ndarray, name: str | None = None) -> str:
        self._count += 1
        name = name or f"c{self._count}"
        self.inits.append(_tensor(name, array))
        return name

    def op(self, op_type: str, *inputs: str, **attrs: int | float | Sequence[int]) -> str:
        self._count += 1
        out = f"t{self._count}"
        body = (
            b"".join(_bytes(1, i) for i in inputs) + _bytes(2, out) + _bytes(3, f"n{self._count}")
        )
        body += _bytes(4, op_type) + b"".join(
            _bytes(5, _attribute(k, v)) for k, v in sorted(attrs.items())
        )
        self.nodes.append(body)
        return out

    def model(
        self, inputs: list[bytes], output: str, out_info: bytes, meta: dict[str, str]
    ) -> bytes:
        # The graph output must carry the last node's name; rename it with an Identity node.
        node = _bytes(1, output) + _bytes(2, "sentence_embedding") + _bytes(4, "Identity")
        graph = b"".join(_bytes(1, n) for n in [*self.nodes, node]) + _bytes(2, "sentence_embedder")
        graph += b"".join(_bytes(5, t) for t in self.inits)
        graph += b"".join(_bytes(11, i) for i in inputs) + _bytes(12, out_info)
        props = b"".join(_bytes(14, _bytes(1, k) + _bytes(2, v)) for k, v in sorted(meta.items()))
        return (
            _int(1, IR_VERSION)
            + _bytes(2, "rag-onnx-embedder")
            + _bytes(3, BUILDER_VERSION)
            + _bytes(7, graph)
            + _bytes(8, _bytes(1, "") + _int(2, OPSET))
            + props
        )


# --- the model ----------------------------------------------------------------------------------


def _f32(value: Any) -> np.ndarray:
    return np.array(value, dtype=np.float32)


def _i64(value: Any) -> np.ndarray:
    return np.array(value, dtype=np.int64)


def read_configs(model_dir: Path) -> tuple[dict[str, Any], dict[str, Any], int]:
    config = json.loads((model_dir / "config.json").read_text())
    pooling_file = model_dir / "1_Pooling" / "config.json"
    pooling = json.loads(pooling_file.read_text()) if pooling_file.exists() else {}
    st_file = model_dir / "sentence_bert_config.json"
    max_len = json.loads(st_file.read_text()).get("max_seq_length") if st_file.exists() else None
    # sentence-transformers caps max_seq_length at the position table, so must we
    return config, pooling, min(max_len or 512, config["max_position_embeddings"])


def source_stamp(model_dir: Path) -> str:
    """Cheap fingerprint of everything the graph is made from.

    Hashing 90 MB of weights costs ~0.15 s on every cold start, so for the weights we use size, mtime
    and the safetensors header (names, dtypes, shapes, offsets) instead; any reinstall or edit of the
    package changes at least the mtime. The small config files are hashed in full.
    """
    digest = hashlib.sha256(BUILDER_VERSION.encode())
    for name in ("config.json", "1_Pooling/config.json", "sentence_bert_config.json"):
        path = model_dir / name
        digest.update(name.encode() + b"\0" + (path.read_bytes() if path.exists() else b"-"))
    weights = model_dir / "model.safetensors"
    stat = weights.stat()
    with weights.open("rb") as handle:
        header_len = struct.unpack("<Q", handle.read(8))[0]
        digest.update(handle.read(header_len))
    digest.update(f"{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def graph_bytes(model_dir: Path, stamp: str = "") -> bytes:
    """The serialised ONNX model of the sentence embedder in `model_dir`."""
    stamp = stamp or source_stamp(model_dir)
    from safetensors.numpy import load_file

    config, pooling, _ = read_configs(model_dir)
    # Refuse what the graph does not implement rather than return subtly wrong vectors.
    if config.get("model_type") != "bert" or config.get("hidden_act") != "gelu":
        raise ConfigError(f"only BERT with exact (erf) GELU is supported, got {config}")
    if config.get("position_embedding_type", "absolute") != "absolute":
        raise ConfigError("only absolute position embeddings are supported")
    if pooling and not pooling.get("pooling_mode_mean_tokens"):
        raise ConfigError(f"only mean pooling is supported, got {pooling}")

    weights = load_file(str(model_dir / "model.safetensors"))
    # Some checkpoints prefix every name with "bert." (BertForX); plain BertModel has no prefix.
    prefix = "bert." if "bert.embeddings.word_embeddings.weight" in weights else ""

    def w(name: str) -> np.ndarray:
        return weights[prefix + name].astype(np.float32)

    hidden, heads = config["hidden_size"], config["num_attention_heads"]
    head_dim, eps = hidden // heads, float(config["layer_norm_eps"])  # eps is 1e-12, not 1e-5
    g = _Graph()

    def layer_norm(x: str, name: str) -> str:
        return g.op(
            "LayerNormalization",
            x,
            g.const(w(name + ".weight")),
            g.const(w(name + ".bias")),
            axis=-1,
            epsilon=eps,
        )

    def linear(x: str, name: str, scale: float = 1.0) -> str:
        # torch Linear stores [out, in]; MatMul wants [in, out]
        return g.op(
            "Add",
            g.op("MatMul", x, g.const(np.ascontiguousarray(w(name + ".weight").T) * scale)),
            g.const(w(name + ".bias") * scale),
        )

    # Embeddings. Every text is a single segment, so token_type_ids are all 0: adding row 0 of the
    # token-type table is still required (it is not zero), and we fold it into the position table.
    # Position ids are 0..seq-1 for every row (right padding), so a Slice of that table is enough.
    pos_type = (
        w("embeddings.position_embeddings.weight") + w("embeddings.token_type_embeddings.weight")[0]
    )
    words = g.op("Gather", g.const(w("embeddings.word_embeddings.weight")), "input_ids", axis=0)
    seq_len = g.op("Slice", g.op("Shape", "input_ids"), g.const(_i64([1])), g.const(_i64([2])))
    positions = g.op("Slice", g.const(pos_type), g.const(_i64([0])), seq_len, g.const(_i64([0])))
    x = layer_norm(g.op("Add", words, positions), "embeddings.LayerNorm")

    # Padding keys get the most negative float added before softmax, as transformers does.
    mask = g.op("Cast", "attention_mask", to=_FLOAT)
    neg = g.op(
        "Mul", g.op("Sub", g.const(_f32(1.0)), mask), g.const(_f32(np.finfo(np.float32).min))
    )
    key_bias = g.op("Unsqueeze", neg, g.const(_i64([1, 2])))  # [batch, 1, 1, seq]
    split_heads = g.const(_i64([0, 0, heads, head_dim]))
    merge_heads = g.const(_i64([0, 0, hidden]))
    for i in range(config["num_hidden_layers"]):
        p = f"encoder.layer.{i}."
        # 1/sqrt(head_dim) is folded into the query projection: one Mul less per layer.
        q = g.op(
            "Transpose",
            g.op(
                "Reshape",
                linear(x, p + "attention.self.query", 1 / math.sqrt(head_dim)),
                split_heads,
            ),
            perm=[0, 2, 1, 3],
        )
        k = g.op(
            "Transpose",
            g.op("Reshape", linear(x, p + "attention.self.key"), split_heads),
            perm=[0, 2, 3, 1],
        )
        v = g.op(
            "Transpose",
            g.op("Reshape", linear(x, p + "attention.self.value"), split_heads),
            perm=[0, 2, 1, 3],
        )
        probs = g.op("Softmax", g.op("Add", g.op("MatMul", q, k), key_bias), axis=-1)
        context = g.op(
            "Reshape", g.op("Transpose", g.op("MatMul", probs, v), perm=[0, 2, 1, 3]), merge_heads
        )
        x = layer_norm(
            g.op("Add", linear(context, p + "attention.output.dense"), x),
            p + "attention.output.LayerNorm",
        )
        h = linear(x, p + "intermediate.dense")
        # BERT's "gelu" is the exact erf form, not the tanh approximation. Written in the pattern
        # onnxruntime's GeluFusion recognises, so it runs as one fused kernel.
        erf = g.op("Erf", g.op("Div", h, g.const(_f32(math.sqrt(2.0)))))
        h = g.op("Mul", g.op("Mul", h, g.op("Add", erf, g.const(_f32(1.0)))), g.const(_f32(0.5)))
        x = layer_norm(g.op("Add", linear(h, p + "output.dense"), x), p + "output.LayerNorm")

    # Mean over real tokens only; clamp like sentence-transformers (count >= 1e-9, norm >= 1e-12).
    mask3 = g.op("Unsqueeze", mask, g.const(_i64([2])))
    axis1 = g.const(_i64([1]))
    summed = g.op("ReduceSum", g.op("Mul", x, mask3), axis1, keepdims=0)
    count = g.op("Max", g.op("ReduceSum", mask3, axis1, keepdims=0), g.const(_f32(1e-9)))
    mean = g.op("Div", summed, count)
    norm = g.op("Sqrt", g.op("ReduceSum", g.op("Mul", mean, mean), axis1, keepdims=1))
    out = g.op("Div", mean, g.op("Max", norm, g.const(_f32(1e-12))))

    inputs = [_value_info(n, _INT64, ["batch", "seq"]) for n in ("input_ids", "attention_mask")]
    return g.model(
        inputs,
        out,
        _value_info("sentence_embedding", _FLOAT, ["batch", hidden]),
        {"source_stamp": stamp, "hidden_size": str(hidden)},
    )


def build_onnx(
    model_dir: str | os.PathLike[str], cache_dir: str | os.PathLike[str], spare_bytes: int = 0
) -> Path:
    """Path of the ONNX graph for `model_dir`, building it first if no file with its stamp exists.

    The stamp is in the file name, so changed weights simply map to a new file. The file is written
    to a temporary name and renamed, so a crash or a concurrent build never leaves a half file.
    A disk that would keep less than `spare_bytes` free beside the graph (about the size of the
    weights) raises OSError ENOSPC before anything is built.
    """
    model_dir, cache_dir = Path(model_dir), Path(cache_dir)
    stamp = source_stamp(model_dir)
    target = cache_dir / f"{model_dir.name}-{stamp}.onnx"
    if target.exists():
        return target
    needed = (model_dir / "model.safetensors").stat().st_size + spare_bytes
    if free_bytes(cache_dir) < needed:
        raise OSError(errno.ENOSPC, f"less than {needed >> 20} MB free for the graph")
    cache_dir.mkdir(parents=True, exist_ok=True)
    data = graph_bytes(model_dir, stamp)
    fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=target.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    # Files of older stamps are 90 MB each and never read again. A process that has one open is
    # unaffected: onnxruntime reads the whole file when its session is created.
    for old in cache_dir.glob(f"{model_dir.name}-*.onnx"):
        if old != target:
            old.unlink(missing_ok=True)
    return target
